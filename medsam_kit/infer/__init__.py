"""Inference: prompted and automatic 3D segmentation, the Python API and result files.

``Segmenter(model, plan=None, label_names=None, device="cpu")`` with ``segment_volume(volume,
prompts=None) -> SegmentationResult`` (labels ``(Z, Y, X)`` uint8 on the input grid, with its
geometry) and ``segment_slice(image, box=..., points=...) -> (Y, X)`` bool; ``Segmenter.from_run``.
Building blocks: :class:`EmbeddingCache` (byte-bounded per-slice encoder features),
:class:`SlicePredictor` / :class:`ResizeTransform` (2D, coordinates), :mod:`.volume`
(propagation, multi-class assembly, automatic mode), :func:`propagate_with_memory` (SAM-2 memory
propagation), :func:`write_result` (files).
"""

from __future__ import annotations

from medsam_kit.infer.cache import DEFAULT_MAX_BYTES, EmbeddingCache
from medsam_kit.infer.memory import propagate_with_memory
from medsam_kit.infer.output import write_overlay, write_result
from medsam_kit.infer.segmenter import SegmentationResult, Segmenter
from medsam_kit.infer.slice_predictor import ResizeTransform, SlicePredictor
from medsam_kit.infer.volume import (
    LabelAssembler,
    PropagationOptions,
    automatic_prompts,
    coarse_label_volume,
    propagate_object,
    segment_automatic,
    segment_prompted,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EmbeddingCache",
    "LabelAssembler",
    "PropagationOptions",
    "ResizeTransform",
    "SegmentationResult",
    "Segmenter",
    "SlicePredictor",
    "automatic_prompts",
    "coarse_label_volume",
    "propagate_object",
    "propagate_with_memory",
    "segment_automatic",
    "segment_prompted",
    "write_overlay",
    "write_result",
]
