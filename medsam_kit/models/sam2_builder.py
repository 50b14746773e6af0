"""SAM-2.1 architectures: Meta's YAML configs read as data, instantiated without global Hydra state.

The ``sam2`` package ships one YAML per size (``sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``).
Its own ``build_sam2`` composes them through Hydra's global config store; here the file is read
with OmegaConf, adjusted (image size, optional widths for tiny variants), resolved to a plain dict
and instantiated with ``hydra.utils.instantiate`` -- no ``compose``, no global state of our own.
(Importing ``sam2`` itself still initialises Hydra's global store once; that is the package's doing.)

The resolved dict is what a model's config keeps under ``"architecture"``, so a run folder
describes its network completely and reloads without the registry.
"""

from __future__ import annotations

import copy
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

# Only modeling classes may be named by a config: configs travel inside checkpoints, and an
# arbitrary ``_target_`` would let a checkpoint file run code that weights_only=True keeps out.
ALLOWED_TARGET_PREFIXES = ("sam2.modeling.", "sam2.sam2_video_predictor.")

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


def _check_targets(node: Any, where: str = "architecture") -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIXES):
            raise ValueError(
                f"SAM-2 config names {target!r} at {where}; only classes under {ALLOWED_TARGET_PREFIXES} may be built"
            )
        for key, value in node.items():
            _check_targets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, f"{where}[{i}]")


def build_sam2_module(architecture: dict[str, Any]) -> nn.Module:
    """Instantiate ``sam2.modeling.sam2_base.SAM2Base`` (random init) from a :func:`sam2_architecture` dict."""
    from hydra.utils import instantiate

    _check_targets(architecture)
    check_sam2_image_size(architecture["image_size"], architecture["image_encoder"]["trunk"].get("window_spec"))
    return instantiate(copy.deepcopy(architecture), _recursive_=True)


def sam2_patch_embedding_path() -> str:
    """Attribute path of Hiera's first convolution inside ``SAM2Base``."""
    return "image_encoder.trunk.patch_embed.proj"
