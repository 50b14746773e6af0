"""SAM-1 (segment-anything ViT) architectures at any input size, and checkpoint resizing between sizes.

``segment_anything.build_sam._build_sam`` fixes the input at 1024 px. Here the same modules are
built from an explicit architecture dict (kept in the model config) at any ``image_size`` that is a
multiple of the 16-px patch. Two parameter groups depend on the size: the absolute position
embedding ``(1, S/16, S/16, D)`` and the relative position tables of the global-attention blocks
``(2*S/16 - 1, head_dim)``. :func:`resize_sam1_state_dict` interpolates them from a checkpoint made
at another size -- bicubic for the grid, linear for the tables (the interpolation SAM's own
``get_rel_pos`` applies at run time), as SAMed and MedSAM-style fine-tuning at 256 px do.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 16

# The official encoder sizes (segment_anything/build_sam.py); decoder settings are shared.
VIT_B = dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11])
VIT_L = dict(
    encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]
)
VIT_H = dict(
    encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]
)
DEFAULTS: dict[str, Any] = dict(
    window_size=14,
    mlp_ratio=4.0,
    prompt_embed_dim=256,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_num_heads=8,
    num_multimask_outputs=3,
    iou_head_depth=3,
    iou_head_hidden_dim=256,
)

_REL_POS_KEY = re.compile(r"(^|\.)blocks\.(\d+)\.attn\.rel_pos_[hw]$")


def sam1_architecture(image_size: int, **overrides: Any) -> dict[str, Any]:
    """Architecture dict for :func:`build_sam1_module`: ``DEFAULTS`` + encoder size + ``overrides``.

    Args:
        image_size: square input side in pixels, a multiple of 16.
        **overrides: any key of ``DEFAULTS`` or ``encoder_*`` (e.g. ``**VIT_B``).
    """
    check_sam1_image_size(image_size)
    arch = {**DEFAULTS, **VIT_B, **overrides, "image_size": image_size}
    unknown = set(arch) - set(DEFAULTS) - set(VIT_B) - {"image_size"}
    if unknown:
        raise ValueError(
            f"unknown SAM-1 architecture keys {sorted(unknown)}; known: {sorted(DEFAULTS) + sorted(VIT_B)}"
        )
    arch["encoder_global_attn_indexes"] = list(arch["encoder_global_attn_indexes"])
    return arch


# Types of every SAM-1 architecture value (a checkpoint's config is data: nothing else is accepted).
_INT_KEYS = (
    "encoder_embed_dim", "encoder_depth", "encoder_num_heads", "window_size", "prompt_embed_dim", "mask_in_chans",
    "decoder_depth", "decoder_mlp_dim", "decoder_num_heads", "num_multimask_outputs", "iou_head_depth",
    "iou_head_hidden_dim", "image_size",
)
_MAY_BE_ZERO = ("window_size", "num_multimask_outputs")  # 0: global attention everywhere / one mask only


def check_sam1_architecture(architecture: Any) -> None:
    """Raise ``ValueError`` unless ``architecture`` holds exactly the keys of :func:`sam1_architecture`, with
    non-negative integers (``mlp_ratio`` a positive number, ``encoder_global_attn_indexes`` block indices)."""
    if not isinstance(architecture, dict):
        raise ValueError(f"SAM-1 architecture must be a dict, got a {type(architecture).__name__}")
    known = {*DEFAULTS, *VIT_B, "image_size"}
    if set(architecture) != known:
        unknown, missing = sorted(map(str, set(architecture) - known)), sorted(known - set(architecture))
        raise ValueError(f"SAM-1 architecture: unknown keys {unknown}, missing keys {missing}")
    for key in _INT_KEYS:
        value = architecture[key]
        floor = 0 if key in _MAY_BE_ZERO else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < floor:
            raise ValueError(f"SAM-1 architecture: {key} must be an integer >= {floor}, got {value!r}")
    ratio = architecture["mlp_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1e3:
        raise ValueError(f"SAM-1 architecture: mlp_ratio must be a positive number, got {ratio!r}")
    indexes = architecture["encoder_global_attn_indexes"]
    depth = architecture["encoder_depth"]
    if not isinstance(indexes, list | tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth for i in indexes
    ):
        raise ValueError(
            f"SAM-1 architecture: encoder_global_attn_indexes must list block indices below {depth}, got {indexes!r}"
        )


def check_sam1_image_size(image_size: int) -> None:
    """Raise ``ValueError`` unless ``image_size`` is a positive multiple of the 16-px patch."""
    if not isinstance(image_size, int) or image_size <= 0 or image_size % PATCH_SIZE:
        raise ValueError(
            f"SAM-1 image_size must be a positive multiple of {PATCH_SIZE}, got {image_size!r}; e.g. 256 or 1024"
        )


def build_sam1_module(architecture: dict[str, Any]) -> nn.Module:
    """``segment_anything.modeling.Sam`` (random init) as ``_build_sam`` makes it, at ``architecture['image_size']``."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    check_sam1_architecture(architecture)
    a = architecture
    image_size = a["image_size"]
    check_sam1_image_size(image_size)
    grid = image_size // PATCH_SIZE
    dim = a["prompt_embed_dim"]
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"],
            embed_dim=a["encoder_embed_dim"],
            img_size=image_size,
            mlp_ratio=a["mlp_ratio"],
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=a["encoder_num_heads"],
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(a["encoder_global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=a["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=dim,
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_num_heads"],
            ),
            transformer_dim=dim,
            iou_head_depth=a["iou_head_depth"],
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
    )


def resize_sam1_state_dict(
    state_dict: dict[str, torch.Tensor], target_shapes: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Interpolate the size-dependent SAM-1 encoder tensors of ``state_dict`` to ``target_shapes``.

    Only ``*image_encoder.pos_embed`` ``(1, H, W, D)`` and global-attention ``rel_pos_h/w``
    ``(2*H - 1, head_dim)`` are touched, and only when their shapes differ from the target's
    (i.e. the checkpoint was made at another image size); every other key is returned as is, so a
    genuine mismatch still surfaces in the strict key check.

    Args:
        state_dict: checkpoint tensors (not modified).
        target_shapes: ``{key: shape}`` of the model being loaded.
    """
    out = dict(state_dict)
    for key, value in state_dict.items():
        target = target_shapes.get(key)
        if target is None or tuple(value.shape) == tuple(target):
            continue
        if key.endswith("image_encoder.pos_embed") and value.ndim == 4 and value.shape[-1] == target[-1]:
            grid = value.permute(0, 3, 1, 2).float()  # (1, D, H, W)
            grid = F.interpolate(grid, size=tuple(target[1:3]), mode="bicubic", align_corners=False)
            out[key] = grid.permute(0, 2, 3, 1).to(value.dtype).contiguous()
        elif _REL_POS_KEY.search(key) and value.ndim == 2 and value.shape[1] == target[1]:
            table = value.float().t()[None]  # (1, head_dim, L)
            table = F.interpolate(table, size=int(target[0]), mode="linear")
            out[key] = table[0].t().to(value.dtype).contiguous()
    return out


def sam1_patch_embedding_path() -> str:
    """Attribute path of the ViT patch-embedding convolution inside ``Sam``."""
    return "image_encoder.patch_embed.proj"
