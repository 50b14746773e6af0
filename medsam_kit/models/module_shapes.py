"""Describe and rebuild networks whose layer widths differ from the registry's (pruned encoders).

A pruned model (SlimSAM-style) keeps the registry architecture but some layers are narrower. Its
config records each changed piece under ``"module_shapes"``::

    {"sam.image_encoder.blocks.0.mlp.lin1": {"type": "Linear", "in_features": 768, "out_features": 384, "bias": true},
     "sam.image_encoder.blocks.0.attn": {"type": "attributes", "values": {"num_heads": 6}},
     "sam.image_encoder.pos_embed": {"type": "Parameter", "shape": [1, 16, 16, 384]}}

:func:`apply_module_shapes` replaces those modules / parameters with freshly initialised ones of the
recorded shape before the weights are loaded; :func:`module_shape_changes` writes the dict by
comparing a pruned model with an unpruned reference. Attribute values are limited to numbers,
booleans and lists of them (a checkpoint's config must never carry code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def describe(module_or_param: nn.Module | torch.Tensor) -> dict[str, Any] | None:
    """Shape record of a Linear / Conv2d / ConvTranspose2d / LayerNorm / Embedding / Parameter, else None."""
    m = module_or_param
    if isinstance(m, torch.Tensor):
        return {"type": "Parameter", "shape": list(m.shape)}
    if isinstance(m, nn.Linear):
        return {
            "type": "Linear",
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        }
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        return {
            "type": type(m).__name__,
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": list(m.padding),
            "groups": m.groups,
            "bias": m.bias is not None,
        }
    if isinstance(m, nn.LayerNorm):
        return {
            "type": "LayerNorm",
            "normalized_shape": list(m.normalized_shape),
            "eps": m.eps,
            "elementwise_affine": m.elementwise_affine,
        }
    if isinstance(m, nn.Embedding):
        return {"type": "Embedding", "num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim}
    return None


def _make(spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "Linear":
        return nn.Linear(**args)
    if kind in ("Conv2d", "ConvTranspose2d"):
        return getattr(nn, kind)(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    if kind == "LayerNorm":
        return nn.LayerNorm(tuple(args.pop("normalized_shape")), **args)
    if kind == "Embedding":
        return nn.Embedding(**args)
    raise ValueError(
        f"module_shapes: unsupported type {kind!r}; supported: Linear, Conv2d, ConvTranspose2d, LayerNorm, "
        "Embedding, Parameter, attributes"
    )


# Arguments each recorded module type may carry (what :func:`describe` writes), and nothing else.
_ARGUMENTS = {
    "Linear": {"in_features", "out_features", "bias"},
    "Conv2d": {"in_channels", "out_channels", "kernel_size", "stride", "padding", "groups", "bias"},
    "ConvTranspose2d": {"in_channels", "out_channels", "kernel_size", "stride", "padding", "groups", "bias"},
    "LayerNorm": {"normalized_shape", "eps", "elementwise_affine"},
    "Embedding": {"num_embeddings", "embedding_dim"},
    "Parameter": {"shape"},
    "attributes": {"values"},
}


def check_module_shapes(shapes: Any) -> None:
    """Raise ``ValueError`` unless ``shapes`` is a ``module_shapes`` dict of plain records (module docstring).

    Paths are dotted attribute names without private (``_``) parts; each record has a known ``type``
    and only that type's arguments, as numbers, booleans or lists of them; ``attributes`` names public
    attributes only. (A checkpoint's config must never reach code or private state.)
    """
    if not isinstance(shapes, dict):
        raise ValueError(f"module_shapes must be a dict, got a {type(shapes).__name__}")
    for path, spec in shapes.items():
        parts = path.split(".") if isinstance(path, str) else [None]
        if not all(isinstance(p, str) and (p.isidentifier() and not p.startswith("_") or _is_index(p)) for p in parts):
            raise ValueError(f"module_shapes: {path!r} is not a dotted path of public attribute names")
        if not isinstance(spec, dict) or spec.get("type") not in _ARGUMENTS:
            raise ValueError(
                f"module_shapes entry {path!r} must be a dict whose 'type' is one of {sorted(_ARGUMENTS)}, got {spec!r}"
            )
        extra = set(spec) - {"type"} - _ARGUMENTS[spec["type"]]
        if extra:
            raise ValueError(f"module_shapes entry {path!r}: unknown keys {sorted(map(str, extra))} for {spec['type']}")
        arguments = {k: v for k, v in spec.items() if k != "type"}
        values = spec.get("values", {}) if spec["type"] == "attributes" else arguments
        if not isinstance(values, dict):
            raise ValueError(f"module_shapes entry {path!r}: 'values' must be a dict")
        for key, value in values.items():
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise ValueError(f"module_shapes entry {path!r}: {key!r} is not a public attribute name")
            if not _plain(value):
                raise ValueError(f"module_shapes: attribute {path}.{key} must be a number, bool or list of them")


def _is_index(part: str) -> bool:
    """A ``ModuleList`` / ``Sequential`` index such as ``"0"`` (ASCII digits only)."""
    return part.isascii() and part.isdigit()


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
    except AttributeError as err:
        raise ValueError(f"module_shapes: the model has no module {parent_path!r} (entry {path!r})") from err
    if not hasattr(parent, name):
        raise ValueError(f"module_shapes: the model has no attribute {path!r}")
    return parent, name


def apply_module_shapes(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> None:
    """Replace the modules / parameters / attributes listed in ``shapes`` (see module docstring), in place."""
    check_module_shapes(shapes or {})
    for path, spec in (shapes or {}).items():
        parent, name = _parent(model, path)
        old = getattr(parent, name)
        if spec["type"] == "attributes":
            for key, value in spec.get("values", {}).items():
                if not _plain(getattr(old, key, None)):  # only data such as num_heads, never a method or module
                    raise ValueError(
                        f"module_shapes: {path}.{key} is not an existing number / bool attribute of the model"
                    )
                setattr(old, key, value)
        elif spec["type"] == "Parameter":
            device = old.device if isinstance(old, torch.Tensor) else None
            dtype = old.dtype if isinstance(old, torch.Tensor) else None
            setattr(parent, name, nn.Parameter(torch.zeros(spec["shape"], device=device, dtype=dtype)))
        else:
            new = _make(spec)
            if isinstance(old, nn.Module):
                ref = next(iter(old.parameters()), None)
                if ref is not None:
                    new = new.to(device=ref.device, dtype=ref.dtype)
            setattr(parent, name, new)


def _plain(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return True
    return isinstance(value, list | tuple) and all(isinstance(v, bool | int | float) for v in value)


def module_shape_changes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """The ``module_shapes`` dict that turns ``reference`` (registry widths) into ``model`` (pruned).

    Compares every describable module and every directly owned parameter whose shape differs.
    Attribute changes (e.g. ``num_heads``) cannot be seen from shapes: add those entries yourself.
    """
    ref_modules = dict(reference.named_modules())
    changes: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        ref = ref_modules.get(path)
        if ref is None:
            continue
        mine, theirs = describe(module), describe(ref)
        if mine is not None and mine != theirs:
            changes[path] = mine
            continue
        for pname, param in module.named_parameters(recurse=False):
            ref_param = getattr(ref, pname, None)
            if describe(module) is None and isinstance(ref_param, torch.Tensor) and ref_param.shape != param.shape:
                changes[f"{path}.{pname}" if path else pname] = describe(param)
    return changes
