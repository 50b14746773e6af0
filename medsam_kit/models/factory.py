"""Model configs (plain data) and the one path from a config (+ checkpoint) to a :class:`SegmenterModel`.

A model config is a JSON/YAML-compatible dict::

    {"model_name": "sam2.1_hiera_tiny",   # registry name it came from
     "family": "sam2" | "sam",
     "image_size": 1024,                   # S, square model input
     "in_channels": 3,                     # C
     "num_classes": 1,                     # K foreground classes of the coarse head
     "pixel_mean": [...], "pixel_std": [...],   # C values each, [0, 1] intensity units
     "architecture": {...},                # SAM-2: resolved YAML model node; SAM-1: ViT/decoder sizes
     "coarse_head": {"use_high_res": bool},
     "module_shapes": {...},               # layers whose widths differ (pruning), see module_shapes.py
     "adapters": [...],                    # encoder adapters attached after the base is built
     "decoder_postprocessing": bool}       # SAM-2 only, optional (see below)

``decoder_postprocessing`` is SAM-2's eval-mode fallback ``dynamic_multimask_via_stability``: with
``multimask_output=False`` the decoder replaces its single-mask output (token 0) by the best of the
multimask tokens 1-3 whenever token 0 is unstable. That is the official predictor's behaviour and
suits official weights used as they are, so it is on only for a model built from an official
checkpoint without an explicit setting. medsam_kit's supervised training trains token 0 alone, so a
model built for training (random init) and every medsam_kit checkpoint have it off: there the
fallback would swap a trained mask for untrained ones.

Build order (the same for every entry point): base SAM module at RGB input, random init -> official
weights into it (if any; SAM-1 position tables resized to ``image_size``) -> wrapper (patch embedding
adapted to ``in_channels`` by the rule in :mod:`.channels`, coarse head) -> ``module_shapes`` ->
``adapters`` -> medsam_kit weights (if any, every key strict).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from torch import nn

from medsam_kit.models.adapters import attach_adapters
from medsam_kit.models.channels import default_normalization
from medsam_kit.models.checkpoints import (
    FORMAT_NAME,
    Checkpoint,
    CheckpointError,
    load_state_dict_strict,
    read_checkpoint,
)
from medsam_kit.models.module_shapes import apply_module_shapes, check_module_shapes
from medsam_kit.models.sam1_builder import (
    build_sam1_module,
    check_sam1_architecture,
    check_sam1_image_size,
    resize_sam1_state_dict,
)
from medsam_kit.models.sam2_builder import (
    BACKBONE_STRIDE,
    build_sam2_module,
    check_plain_data,
    check_sam2_architecture,
    check_sam2_image_size,
)
from medsam_kit.models.segmenter_model import SegmenterModel

CONFIG_KEYS = (
    "model_name",
    "family",
    "image_size",
    "in_channels",
    "num_classes",
    "pixel_mean",
    "pixel_std",
    "architecture",
    "coarse_head",
    "module_shapes",
    "adapters",
)


def make_config(
    model_name: str,
    family: str,
    architecture: dict[str, Any],
    image_size: int,
    in_channels: int = 3,
    num_classes: int = 1,
    pixel_mean: list[float] | None = None,
    pixel_std: list[float] | None = None,
    coarse_head: dict[str, Any] | None = None,
    module_shapes: dict[str, Any] | None = None,
    adapters: list[dict[str, Any]] | None = None,
    decoder_postprocessing: bool | None = None,
) -> dict[str, Any]:
    """A validated model config (module docstring); normalisation defaults follow ``in_channels``.

    ``decoder_postprocessing`` None means "official behaviour only for official weights": it is
    resolved when the model is built (on with an official checkpoint, off otherwise).
    """
    if decoder_postprocessing is not None and not isinstance(decoder_postprocessing, bool):
        raise ValueError(f"decoder_postprocessing must be True, False or None, got {decoder_postprocessing!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {num_classes!r}")
    default_mean, default_std = default_normalization(in_channels)
    config = {
        "model_name": model_name,
        "family": family,
        "image_size": image_size,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "pixel_mean": [float(v) for v in (pixel_mean if pixel_mean is not None else default_mean)],
        "pixel_std": [float(v) for v in (pixel_std if pixel_std is not None else default_std)],
        "architecture": copy.deepcopy(architecture),
        "coarse_head": dict(coarse_head or {"use_high_res": family == "sam2"}),
        "module_shapes": copy.deepcopy(module_shapes or {}),
        "adapters": copy.deepcopy(adapters or []),
        "decoder_postprocessing": decoder_postprocessing,
    }
    return with_image_size(config, image_size)


def check_config(config: dict[str, Any], source: str = "model config") -> None:
    """Raise ``ValueError`` naming ``source`` unless ``config`` is a complete model config of plain data.

    Configs travel inside checkpoints, so nothing in one may lead to code: the architecture may name
    only the known SAM-2 modeling classes at their places (:func:`check_sam2_architecture`) or hold
    SAM-1's typed sizes (:func:`check_sam1_architecture`); every other entry is plain data (numbers,
    strings, bools, lists, dicts without ``_``-keys).
    """
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a dict, got {type(config).__name__}")
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"{source}: model config lacks {missing}; expected keys {list(CONFIG_KEYS)}")
    if config["family"] not in ("sam2", "sam"):
        raise ValueError(f"{source}: unknown family {config['family']!r}; expected 'sam2' or 'sam'")
    try:
        for key, value in config.items():
            if key != "architecture":
                check_plain_data(value, f"model config {key}")
        if config["family"] == "sam2":
            check_sam2_architecture(config["architecture"])
        else:
            check_sam1_architecture(config["architecture"])
        check_module_shapes(config["module_shapes"])
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def with_image_size(config: dict[str, Any], image_size: int) -> dict[str, Any]:
    """Copy of ``config`` at input side ``image_size`` (every size-dependent architecture entry updated)."""
    config = copy.deepcopy(config)
    arch = config["architecture"]
    if config["family"] == "sam2":
        check_sam2_image_size(image_size, arch["image_encoder"]["trunk"].get("window_spec"))
        layer = arch["memory_attention"]["layer"]
        feat = image_size // BACKBONE_STRIDE
        for attention in (layer["self_attention"], layer["cross_attention"]):
            attention["feat_sizes"] = [feat, feat]
    else:
        check_sam1_image_size(image_size)
    arch["image_size"] = config["image_size"] = image_size
    return config


def build_sam_module(config: dict[str, Any]) -> nn.Module:
    """The official base module (``SAM2Base`` / ``Sam``) with RGB input and random init."""
    if config["family"] == "sam2":
        return build_sam2_module(config["architecture"])
    return build_sam1_module(config["architecture"])


def set_decoder_postprocessing(sam: nn.Module, enabled: bool) -> None:
    """Switch SAM-2's eval-mode single-mask fallback (module docstring) on a built ``SAM2Base``.

    The architecture dict keeps the official decoder arguments (it mirrors Meta's YAML exactly);
    this attribute is the one the decoder reads at every forward.
    """
    sam.sam_mask_decoder.dynamic_multimask_via_stability = bool(enabled)
    if hasattr(sam, "binarize_mask_from_pts_for_mem_enc"):  # as Meta's video builder with post-processing
        sam.binarize_mask_from_pts_for_mem_enc = bool(enabled)


def model_from_config(
    config: dict[str, Any], official_state: dict | None = None, source: str | os.PathLike = "state dict"
) -> SegmenterModel:
    """Build the network ``config`` describes; random init unless ``official_state`` (official keys) is given.

    An unset ``decoder_postprocessing`` is resolved here (on only with ``official_state``) and the
    resolved value is written into the model's config, so a checkpoint records what was used.
    """
    check_config(config)
    config = copy.deepcopy(config)
    postprocessing = config.get("decoder_postprocessing")
    if postprocessing is None:  # official behaviour for official weights only; SAM-1 has no such step
        postprocessing = official_state is not None and config["family"] == "sam2"
    config["decoder_postprocessing"] = bool(postprocessing)
    sam = build_sam_module(config)
    if config["family"] == "sam2":
        set_decoder_postprocessing(sam, config["decoder_postprocessing"])
    if official_state is not None:
        if config["module_shapes"]:
            raise CheckpointError(
                f"config of {config['model_name']!r} describes modified layer widths (module_shapes), which an "
                f"official checkpoint ({source}) cannot fill; load the medsam_kit checkpoint of that model instead"
            )
        if config["family"] == "sam":
            official_state = resize_sam1_state_dict(official_state, {k: v.shape for k, v in sam.state_dict().items()})
        load_state_dict_strict(sam, official_state, source, target=f"model {config['model_name']!r}")
    model = SegmenterModel(sam, config)
    apply_module_shapes(model, config["module_shapes"])
    attach_adapters(model, config["adapters"])
    return model


def model_from_checkpoint(
    checkpoint: str | os.PathLike | Checkpoint,
    name: str | None = None,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
) -> SegmenterModel:
    """Rebuild a model from a medsam_kit checkpoint alone (its config + weights), in eval mode.

    ``name`` / ``in_channels`` / ``num_classes``, when given, must match what the file stores;
    ``image_size`` may differ (SAM-1 position tables are interpolated, SAM-2 needs no change).
    SAM-2's ``decoder_postprocessing`` is always off for these files (module docstring).
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    if ckpt.kind != FORMAT_NAME:
        raise CheckpointError(
            f"{ckpt.path} is an official '{ckpt.kind}' checkpoint without a model config; "
            "load it with load_model(NAME, checkpoint=...) naming the registry model it belongs to"
        )
    try:
        check_config(ckpt.config, source=f"checkpoint {ckpt.path}")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    config = ckpt.config
    for label, wanted in (("model_name", name), ("in_channels", in_channels), ("num_classes", num_classes)):
        if wanted is not None and wanted != config[label]:
            raise CheckpointError(
                f"checkpoint {ckpt.path} holds {label}={config[label]!r}, but {wanted!r} was requested; "
                f"omit {label if label != 'model_name' else 'the model name'} to use the stored value"
            )
    if image_size is not None and image_size != config["image_size"]:
        config = with_image_size(config, image_size)
    # Our checkpoints hold models trained (or fine-tuned) on token 0 alone: never let the decoder
    # swap that mask for untrained multimask tokens, whatever an older or re-saved config says.
    config = {**config, "decoder_postprocessing": False}
    model = model_from_config(config)
    state = ckpt.state_dict
    if config["family"] == "sam":
        state = resize_sam1_state_dict(state, {k: v.shape for k, v in model.state_dict().items()})
    load_state_dict_strict(model, state, ckpt.path, target=f"model {config['model_name']!r} from its stored config")
    return model.to(device).eval()


def build_model(
    config: dict[str, Any], checkpoint: str | os.PathLike | Checkpoint | None = None, device: str = "cpu"
) -> SegmenterModel:
    """Model for ``config``, with weights from ``checkpoint`` (any supported format), in eval mode.

    A medsam_kit checkpoint brings its own config: it must be one of the same registry model, and
    its stored architecture wins (see :func:`model_from_checkpoint`).
    """
    if checkpoint is None:
        return model_from_config(config).to(device).eval()
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    if ckpt.kind == FORMAT_NAME:
        return model_from_checkpoint(ckpt, name=config["model_name"], image_size=config["image_size"], device=device)
    return model_from_config(config, official_state=ckpt.state_dict, source=ckpt.path).to(device).eval()
