"""SAM-2.1 architectures: Meta's YAML configs read as data, instantiated without global Hydra state.

The ``sam2`` package ships one YAML per size (``sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``).
Its own ``build_sam2`` composes them through Hydra's global config store; here the file is read
with OmegaConf, adjusted (image size, optional widths for tiny variants), resolved to a plain dict
and built by :func:`build_sam2_module`, which accepts only the exact modeling classes of
:data:`SAM2_CLASSES` at their places and plain data elsewhere (Hydra's ``instantiate`` would build
any importable callable a checkpoint names). (Importing ``sam2`` itself still initialises Hydra's
global store once; that is the package's doing.)

The resolved dict is what a model's config keeps under ``"architecture"``, so a run folder
describes its network completely and reloads without the registry.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import math
from importlib import resources
from typing import Any

from torch import nn

# What ``sam2.build_sam.build_sam2(apply_postprocessing=True)`` adds: in eval mode a single-mask
# output falls back to the best multimask output when it is unstable. Kept here so the architecture
# equals Meta's official config; whether the fallback is *active* is the model config's
# ``decoder_postprocessing`` (medsam_kit.models.factory): on only for official weights used as they
# are, off for models built for training and for medsam_kit checkpoints, whose token-0 mask is the
# only one supervised training trains.
POSTPROCESSING_DECODER_ARGS = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

# A SAM-2 architecture travels inside checkpoints, so it is read as data, never as code: each place
# that names a class (its path in the nested dict) may name exactly the class(es) listed here, and
# every other value must be plain data. Hydra's ``instantiate`` is not used for these dicts: it
# follows any dotted path (``sam2.modeling.sam2_base.torch.load`` reaches ``torch.load``) and honours
# ``_args_`` / ``_partial_`` anywhere, which let a crafted checkpoint run a pickle payload.
SAM2_CLASSES: dict[str, tuple[str, ...]] = {
    "": ("sam2.modeling.sam2_base.SAM2Base", "sam2.sam2_video_predictor.SAM2VideoPredictor"),
    "image_encoder": ("sam2.modeling.backbones.image_encoder.ImageEncoder",),
    "image_encoder.trunk": ("sam2.modeling.backbones.hieradet.Hiera",),
    "image_encoder.neck": ("sam2.modeling.backbones.image_encoder.FpnNeck",),
    "image_encoder.neck.position_encoding": ("sam2.modeling.position_encoding.PositionEmbeddingSine",),
    "memory_attention": ("sam2.modeling.memory_attention.MemoryAttention",),
    "memory_attention.layer": ("sam2.modeling.memory_attention.MemoryAttentionLayer",),
    "memory_attention.layer.self_attention": ("sam2.modeling.sam.transformer.RoPEAttention",),
    "memory_attention.layer.cross_attention": ("sam2.modeling.sam.transformer.RoPEAttention",),
    "memory_encoder": ("sam2.modeling.memory_encoder.MemoryEncoder",),
    "memory_encoder.position_encoding": ("sam2.modeling.position_encoding.PositionEmbeddingSine",),
    "memory_encoder.mask_downsampler": ("sam2.modeling.memory_encoder.MaskDownSampler",),
    "memory_encoder.fuser": ("sam2.modeling.memory_encoder.Fuser",),
    "memory_encoder.fuser.layer": ("sam2.modeling.memory_encoder.CXBlock",),
}
_TARGET = "_target_"
# Real arguments of those classes that a checkpoint must not set: Hiera's ``weights_path`` makes sam2
# ``torch.load`` another file (without ``weights_only`` on older torch: a pickle runs), and compiling
# the encoder is a deployment choice of the user, not of a file.
# Each may only keep its harmless value (the official YAMLs write ``compile_image_encoder: false``).
REFUSED_ARGUMENTS = {
    "weights_path": (None, "makes sam2 torch.load another file"),
    "compile_image_encoder": (False, "compiles the encoder with torch.compile"),
}
# Arguments that hold text (all others are numbers, booleans, lists or dicts of them): MemoryAttentionLayer's
# activation name and FpnNeck's interpolation mode / fusion rule, each from a fixed set of names.
_TEXT_ARGUMENTS = {"activation", "fpn_interp_model", "fuse_type"}
# Classes taking ``**kwargs`` pass them on to this base class's constructor.
_KWARGS_BASE = {
    "sam2.modeling.sam.transformer.RoPEAttention": "sam2.modeling.sam.transformer.Attention",
    "sam2.sam2_video_predictor.SAM2VideoPredictor": "sam2.modeling.sam2_base.SAM2Base",
}

BACKBONE_STRIDE = 16  # SAM2Base default: the decoder works on stride-16 features


def sam2_architecture(
    yaml_name: str,
    image_size: int,
    trunk: dict[str, Any] | None = None,
    d_model: int | None = None,
    mem_dim: int | None = None,
    memory_layers: int | None = None,
    memory_ffn: int | None = None,
) -> dict[str, Any]:
    """The resolved ``model`` node of a packaged SAM-2.1 YAML, adjusted to ``image_size`` and widths.

    Args:
        yaml_name: file in ``sam2/configs/sam2.1/``, e.g. ``"sam2.1_hiera_t.yaml"``.
        image_size: square input side in pixels; a multiple of 32 (Hiera's first stage works on
            stride-4 tokens in 8x8 windows and the FPN doubles stride-32 maps).
        trunk: Hiera keyword overrides (``embed_dim``, ``num_heads``, ``stages``, ``window_spec``,
            ``global_att_blocks``, ...); the neck's channel list follows automatically.
        d_model: prompt / decoder / memory width (256 in every official size).
        mem_dim: memory feature width (64 officially).
        memory_layers, memory_ffn: memory-attention depth and feed-forward width (4 and 2048).

    Returns:
        A plain, JSON-serialisable dict with ``_target_`` keys, ready for :func:`build_sam2_module`.
    """
    from omegaconf import OmegaConf  # a dependency of sam2; imported late so sam2 stays optional

    check_sam2_image_size(image_size, (trunk or {}).get("window_spec"))
    path = resources.files("sam2") / "configs" / "sam2.1" / yaml_name
    if not path.is_file():
        raise ValueError(f"sam2 package has no config {yaml_name!r} in {path.parent}; is sam2==1.1.0 installed?")
    cfg = OmegaConf.to_container(OmegaConf.load(str(path)).model, resolve=True)

    cfg["image_size"] = image_size
    cfg["sam_mask_decoder_extra_args"] = {
        **(cfg.get("sam_mask_decoder_extra_args") or {}),
        **POSTPROCESSING_DECODER_ARGS,
    }
    encoder = cfg["image_encoder"]
    if trunk:
        encoder["trunk"].update(copy.deepcopy(trunk))
    hiera = encoder["trunk"]
    # Hiera multiplies the width by dim_mul (2.0 by default) at every stage change.
    n_stages = len(hiera.get("stages", (2, 3, 16, 3)))
    dim_mul = hiera.get("dim_mul", 2.0)
    encoder["neck"]["backbone_channel_list"] = [int(hiera["embed_dim"] * dim_mul**i) for i in reversed(range(n_stages))]

    memory_attention = cfg["memory_attention"]
    layer = memory_attention["layer"]
    memory_encoder = cfg["memory_encoder"]
    feat = image_size // BACKBONE_STRIDE
    for attention in (layer["self_attention"], layer["cross_attention"]):
        attention["feat_sizes"] = [feat, feat]  # RoPE tables sized for the stride-16 map
    if d_model is not None:
        encoder["neck"]["d_model"] = d_model
        encoder["neck"]["position_encoding"]["num_pos_feats"] = d_model
        memory_attention["d_model"] = layer["d_model"] = d_model
        layer["self_attention"]["embedding_dim"] = layer["cross_attention"]["embedding_dim"] = d_model
        memory_encoder["in_dim"] = d_model
        memory_encoder["mask_downsampler"]["embed_dim"] = d_model
        memory_encoder["fuser"]["layer"]["dim"] = d_model
    if mem_dim is not None:
        memory_encoder["out_dim"] = mem_dim
        memory_encoder["position_encoding"]["num_pos_feats"] = mem_dim
        layer["cross_attention"]["kv_in_dim"] = mem_dim
    if memory_layers is not None:
        memory_attention["num_layers"] = memory_layers
    if memory_ffn is not None:
        layer["dim_feedforward"] = memory_ffn
    return cfg


def check_sam2_image_size(image_size: int, window_spec=None) -> None:
    """Raise ``ValueError`` unless ``image_size`` suits Hiera.

    Hiera tiles its stride-4 tokens with ``window_spec[0]``-sized windows (8 officially) and the FPN
    doubles stride-32 maps, so the side must be a multiple of ``lcm(4 * window_spec[0], 32)``.
    """
    multiple = math.lcm(4 * int((window_spec or (8,))[0]), 32)
    if not isinstance(image_size, int) or image_size <= 0 or image_size % multiple:
        raise ValueError(
            f"SAM-2 image_size must be a positive multiple of {multiple} (Hiera windows and FPN strides), "
            f"got {image_size!r}; e.g. 256, 512 or 1024"
        )


def check_sam2_architecture(architecture: Any) -> None:
    """Raise ``ValueError`` unless ``architecture`` is plain data naming only the classes of :data:`SAM2_CLASSES`.

    Rules (a checkpoint's config must never carry code): a ``_target_`` appears exactly at the paths of
    :data:`SAM2_CLASSES` and names one of the classes listed there, by its exact name; every other key
    is a Python identifier not starting with ``_``; every other value is ``None``, a bool, a finite
    number, a string, or a list / dict of those (no ``_target_``, ``_args_`` or ``_partial_`` inside).
    """
    _check_class_node(architecture, "")


def _check_class_node(node: Any, path: str) -> None:
    where = f"architecture.{path}" if path else "architecture"
    if not isinstance(node, dict):
        raise ValueError(f"SAM-2 config: {where} must be a dict naming {SAM2_CLASSES[path][0]!r}, got {_kind(node)}")
    target = node.get(_TARGET)
    if target not in SAM2_CLASSES[path]:
        raise ValueError(
            f"SAM-2 config names {target!r} at {where}; only {' or '.join(map(repr, SAM2_CLASSES[path]))} may be "
            "built there"
        )
    for key, value in node.items():
        if key == _TARGET:
            continue
        child = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise ValueError(f"SAM-2 config: key {key!r} at {where} is not an argument name")
        if key in REFUSED_ARGUMENTS and value is not REFUSED_ARGUMENTS[key][0]:
            harmless, why = REFUSED_ARGUMENTS[key]
            raise ValueError(f"SAM-2 config: {where}.{key} = {value!r} is refused in a model config (it {why}); "
                             f"only {harmless!r} is accepted")
        if key not in _argument_names(target):
            raise ValueError(f"SAM-2 config: {key!r} at {where} is not an argument of {target}")
        if child in SAM2_CLASSES:
            _check_class_node(value, child)
        else:
            check_plain_data(value, f"SAM-2 config: {where}.{key}")
            if _holds_text(value) and key not in _TEXT_ARGUMENTS:
                raise ValueError(f"SAM-2 config: {where}.{key} holds text, but it takes numbers or booleans")


@functools.cache
def _argument_names(target: str) -> frozenset[str]:
    """Keyword arguments the constructor of ``target`` (an exact name from :data:`SAM2_CLASSES`) accepts."""
    names: set[str] = set()
    for name in (target, _KWARGS_BASE.get(target)):
        if name is None:
            continue
        module_name, _, class_name = name.rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        names |= {p.name for p in inspect.signature(cls.__init__).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return frozenset(names)


def _holds_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_text(v) for v in value)
    return isinstance(value, dict) and any(_holds_text(v) for v in value.values())


def check_plain_data(value: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``value`` is JSON-like data: None, bool, finite number, str, list, dict.

    Dict keys must be strings that do not start with ``_`` (so no ``_target_`` / ``_args_`` of a
    config-instantiation library can hide at any depth).
    """
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise ValueError(f"{where}: key {key!r} is not allowed in a config (plain data only)")
            check_plain_data(item, f"{where}.{key}")
        return
    raise ValueError(f"{where}: {_kind(value)} is not plain data (numbers, strings, bools, lists, dicts)")


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def _instantiate(node: dict[str, Any], path: str) -> nn.Module:
    """Build the class at ``path`` from a checked node: children first, then ``cls(**arguments)``."""
    module_name, _, class_name = node[_TARGET].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)  # an exact name from SAM2_CLASSES
    arguments = {}
    for key, value in node.items():
        if key == _TARGET:
            continue
        child = f"{path}.{key}" if path else key
        arguments[key] = _instantiate(value, child) if child in SAM2_CLASSES else copy.deepcopy(value)
    try:
        return cls(**arguments)
    except TypeError as err:  # a missing or unknown argument name
        raise ValueError(f"SAM-2 config: cannot build {node[_TARGET]} at architecture.{path or '(root)'}: {err}") \
            from None


def build_sam2_module(architecture: dict[str, Any]) -> nn.Module:
    """Instantiate ``sam2.modeling.sam2_base.SAM2Base`` (random init) from a :func:`sam2_architecture` dict.

    Raises:
        ValueError: the dict names a class outside :data:`SAM2_CLASSES` or holds anything but plain data
            (see :func:`check_sam2_architecture`), or the image size does not suit Hiera.
    """
    check_sam2_architecture(architecture)
    check_sam2_image_size(architecture.get("image_size"), architecture["image_encoder"]["trunk"].get("window_spec"))
    return _instantiate(architecture, "")


def sam2_patch_embedding_path() -> str:
    """Attribute path of Hiera's first convolution inside ``SAM2Base``."""
    return "image_encoder.trunk.patch_embed.proj"
