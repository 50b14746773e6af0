"""SAM-family models: registry, checkpoints, and the segmentation model wrapper.

Public doors: :func:`list_models`, :func:`load_model` (random init or any checkpoint by path),
:func:`save_checkpoint`, :class:`SegmenterModel` (``encode`` / ``coarse_logits`` / ``decode``).
Conventions (shapes, (x, y) prompt coordinates) are in :mod:`medsam_kit.models.segmenter_model`.
``sam2`` and ``segment_anything`` are imported only when a model of that family is built.
"""

from __future__ import annotations

from medsam_kit.models.adapters import attach_adapters, list_adapters, register_adapter
from medsam_kit.models.channels import IMAGENET_MEAN, IMAGENET_STD, adapt_patch_embedding, default_normalization
from medsam_kit.models.checkpoints import (
    Checkpoint,
    CheckpointError,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)
from medsam_kit.models.factory import (
    build_model,
    make_config,
    model_from_checkpoint,
    model_from_config,
    with_image_size,
)
from medsam_kit.models.module_shapes import apply_module_shapes, module_shape_changes
from medsam_kit.models.registry import get_builder, list_models, load_model, register_model
from medsam_kit.models.segmenter_model import DecoderOutput, Features, SegmenterModel, combine_class_masks

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Checkpoint",
    "CheckpointError",
    "DecoderOutput",
    "Features",
    "SegmenterModel",
    "adapt_patch_embedding",
    "apply_module_shapes",
    "attach_adapters",
    "build_model",
    "combine_class_masks",
    "default_normalization",
    "get_builder",
    "list_adapters",
    "list_models",
    "load_model",
    "load_state_dict_strict",
    "make_config",
    "model_from_checkpoint",
    "model_from_config",
    "module_shape_changes",
    "read_checkpoint",
    "register_adapter",
    "register_model",
    "save_checkpoint",
    "with_image_size",
]
