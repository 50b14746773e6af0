"""Named models: ``@register_model`` builders, :func:`list_models`, :func:`load_model`.

Each builder is one line calling a private ``_sam2`` / ``_sam1`` with keyword arguments, and returns
a :class:`~medsam_kit.models.segmenter_model.SegmenterModel` in eval mode: random init when
``checkpoint`` is None (nothing is ever downloaded), else weights from the file.

Every builder accepts ``checkpoint``, ``image_size`` (default 1024, 128 for the ``*_test`` variants),
``in_channels`` (default 3), ``num_classes`` (default 1), ``device`` and config options
(``pixel_mean``, ``pixel_std``, ``adapters``, ``module_shapes``, ``coarse_head``).

The ``*_test`` variants are registered tiny networks (Hiera / ViT with 32-64 channels and a few
blocks, 128 px) for tests and the CPU demo; real sizes are one name away.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from medsam_kit.models._named import registrar
from medsam_kit.models.checkpoints import FORMAT_NAME, Checkpoint, read_checkpoint
from medsam_kit.models.factory import build_model, make_config, model_from_checkpoint
from medsam_kit.models.sam1_builder import VIT_B, VIT_H, VIT_L, sam1_architecture
from medsam_kit.models.sam2_builder import sam2_architecture
from medsam_kit.models.segmenter_model import SegmenterModel

Builder = Callable[..., SegmenterModel]
_REGISTRY: dict[str, Builder] = {}


#: ``@register_model(name)``: registers ``builder(checkpoint=None, **kwargs) -> SegmenterModel``.
register_model = registrar(_REGISTRY, "model name")


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_builder(name: str) -> Builder:
    """The builder registered as ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def load_model(
    name: str | None,
    checkpoint: str | os.PathLike | Checkpoint | None = None,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    **options: Any,
) -> SegmenterModel:
    """Build registry model ``name`` and load ``checkpoint`` (any supported format) if given.

    Args:
        name: registry name (see :func:`list_models`); may be None when ``checkpoint`` is a
            medsam_kit checkpoint, which names its model and stores its whole config.
        checkpoint: path to an official SAM-2.1 / SAM-1 / MedSAM / MedSAM2 file or a medsam_kit
            checkpoint (or a :class:`~medsam_kit.models.checkpoints.Checkpoint` already read); None for
            random init.
        image_size: square input side S (default: the model's, 1024 or 128 for ``*_test``).
        in_channels: C input channels; C != 3 derives the patch embedding from the RGB kernel.
        num_classes: K foreground classes of the coarse head.
        device: where the model lives; returned in eval mode.
        **options: config options (``pixel_mean``, ``pixel_std``, ``adapters``, ...); not allowed
            with a medsam_kit checkpoint, whose stored config is used.

    Raises:
        ValueError: unknown name or bad option; :class:`~medsam_kit.models.checkpoints.CheckpointError`
            (a ValueError) when the file does not fit, naming missing / unexpected / mis-shaped keys.
    """
    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.kind == FORMAT_NAME:
        if options:
            raise ValueError(f"options {sorted(options)} cannot override the config stored in {ckpt.path}")
        return model_from_checkpoint(ckpt, name, image_size, in_channels, num_classes, device)
    if name is None:
        raise ValueError("a model name is needed unless the checkpoint is a medsam_kit checkpoint")
    return get_builder(name)(
        checkpoint=ckpt,
        image_size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
        device=device,
        **options,
    )


def _finish(
    name, family, architecture, image_size, checkpoint, in_channels, num_classes, device, options
) -> SegmenterModel:
    in_channels = 3 if in_channels is None else in_channels
    num_classes = 1 if num_classes is None else num_classes
    config = make_config(name, family, architecture, image_size, in_channels, num_classes, **options)
    return build_model(config, checkpoint, device)


def _sam2(
    name: str,
    yaml_name: str,
    checkpoint: str | os.PathLike | Checkpoint | None = None,
    *,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    default_image_size: int = 1024,
    trunk: dict[str, Any] | None = None,
    d_model: int | None = None,
    mem_dim: int | None = None,
    memory_layers: int | None = None,
    memory_ffn: int | None = None,
    **options: Any,
) -> SegmenterModel:
    size = image_size or default_image_size
    architecture = sam2_architecture(
        yaml_name,
        size,
        trunk=trunk,
        d_model=d_model,
        mem_dim=mem_dim,
        memory_layers=memory_layers,
        memory_ffn=memory_ffn,
    )
    return _finish(name, "sam2", architecture, size, checkpoint, in_channels, num_classes, device, options)


def _sam1(
    name: str,
    encoder: dict[str, Any],
    checkpoint: str | os.PathLike | Checkpoint | None = None,
    *,
    image_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    default_image_size: int = 1024,
    decoder: dict[str, Any] | None = None,
    **options: Any,
) -> SegmenterModel:
    size = image_size or default_image_size
    architecture = sam1_architecture(size, **encoder, **(decoder or {}))
    return _finish(name, "sam", architecture, size, checkpoint, in_channels, num_classes, device, options)


# --------------------------------------------------------------------------- SAM-2.1 (sam2 package)
@register_model("sam2.1_hiera_tiny")
def sam2_1_hiera_tiny(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM-2.1 Hiera-T, 39 M parameters (``sam2.1_hiera_tiny.pt``; MedSAM2 checkpoints use this layout)."""
    return _sam2("sam2.1_hiera_tiny", "sam2.1_hiera_t.yaml", checkpoint, **kwargs)


@register_model("sam2.1_hiera_small")
def sam2_1_hiera_small(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM-2.1 Hiera-S, 46 M parameters (``sam2.1_hiera_small.pt``)."""
    return _sam2("sam2.1_hiera_small", "sam2.1_hiera_s.yaml", checkpoint, **kwargs)


@register_model("sam2.1_hiera_base_plus")
def sam2_1_hiera_base_plus(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM-2.1 Hiera-B+, 81 M parameters (``sam2.1_hiera_base_plus.pt``)."""
    return _sam2("sam2.1_hiera_base_plus", "sam2.1_hiera_b+.yaml", checkpoint, **kwargs)


@register_model("sam2.1_hiera_large")
def sam2_1_hiera_large(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM-2.1 Hiera-L, 224 M parameters (``sam2.1_hiera_large.pt``)."""
    return _sam2("sam2.1_hiera_large", "sam2.1_hiera_l.yaml", checkpoint, **kwargs)


@register_model("sam2.1_hiera_tiny_test")
def sam2_1_hiera_tiny_test(checkpoint=None, **kwargs) -> SegmenterModel:
    """Tiny SAM-2.1 for tests and the CPU demo: Hiera 32-256 channels, 5 blocks, width 64, 128 px, ~2.3 M parameters."""
    return _sam2(
        "sam2.1_hiera_tiny_test",
        "sam2.1_hiera_t.yaml",
        checkpoint,
        default_image_size=128,
        trunk=dict(embed_dim=32, num_heads=1, stages=[1, 1, 2, 1], global_att_blocks=[3], window_spec=[8, 4, 8, 4]),
        d_model=64,
        mem_dim=32,
        memory_layers=1,
        memory_ffn=256,
        **kwargs,
    )


# --------------------------------------------------------------------------- SAM-1 (segment_anything)
@register_model("sam_vit_b")
def sam_vit_b(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM ViT-B, 94 M parameters (``sam_vit_b_01ec64.pth``; MedSAM's ``medsam_vit_b.pth`` has this layout)."""
    return _sam1("sam_vit_b", VIT_B, checkpoint, **kwargs)


@register_model("sam_vit_l")
def sam_vit_l(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM ViT-L, 312 M parameters (``sam_vit_l_0b3195.pth``)."""
    return _sam1("sam_vit_l", VIT_L, checkpoint, **kwargs)


@register_model("sam_vit_h")
def sam_vit_h(checkpoint=None, **kwargs) -> SegmenterModel:
    """SAM ViT-H, 641 M parameters (``sam_vit_h_4b8939.pth``)."""
    return _sam1("sam_vit_h", VIT_H, checkpoint, **kwargs)


@register_model("sam_vit_tiny_test")
def sam_vit_tiny_test(checkpoint=None, **kwargs) -> SegmenterModel:
    """Tiny SAM-1 for tests and the CPU demo: ViT 64 channels, 2 blocks (1 global), width 64, 128 px."""
    return _sam1(
        "sam_vit_tiny_test",
        dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1]),
        checkpoint,
        default_image_size=128,
        decoder=dict(window_size=4, prompt_embed_dim=64, decoder_mlp_dim=256, iou_head_hidden_dim=64),
        **kwargs,
    )
