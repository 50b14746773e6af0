"""Batched ground-truth prompts over ``(B, Y, X)`` label slices, as fixed-shape arrays for a model.

Shapes (``B`` slices, ``K`` classes, ``N`` points per prompt):

* ``boxes`` ``(B, K, 4)`` float32 ``[x0, y0, x1, y1]`` (inclusive-exclusive, column/row order);
  rows of absent classes (and all rows when the config asks for no box) are 0.
* ``valid`` ``(B, K)`` bool: the class is present on the slice (its prompt is meaningful).
* ``point_coords`` ``(B, K, N, 2)`` float32 ``(x, y)``; ``point_labels`` ``(B, K, N)`` int64 with
  1 positive, 0 negative and **-1 padding** (SAM's "not a point" label) where fewer points exist.
* ``masks`` ``(B, K, h, w)`` float32 mask inputs when the config asks for them, else ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsam_kit.prompts.from_masks import MaskPromptConfig, RngLike, slice_prompts_from_mask


@dataclass(frozen=True, eq=False)
class BatchPrompts:
    """Fixed-shape prompt arrays for ``B`` slices × ``K`` classes (see module docstring)."""

    classes: tuple[int, ...]
    boxes: np.ndarray
    valid: np.ndarray
    point_coords: np.ndarray
    point_labels: np.ndarray
    masks: np.ndarray | None = None


def batch_prompts_from_labels(labels: np.ndarray, classes: Sequence[int], config: MaskPromptConfig | None = None,
                              rng: RngLike = None) -> BatchPrompts:
    """Prompts for every class on every slice of ``(B, Y, X)`` integer labels.

    Args:
        labels: ``(B, Y, X)`` int label slices (0 background).
        classes: the ``K`` label values, in output order (fixed so shapes do not depend on content).
        config: see :class:`~medsam_kit.prompts.from_masks.MaskPromptConfig`; ``N`` is
            ``n_positive + n_negative``.
        rng: one generator walks slices then classes in order, so a seed fixes the whole batch.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected (B, Y, X) label slices, got shape {labels.shape}")
    cfg = config or MaskPromptConfig()
    classes = tuple(int(c) for c in classes)
    if 0 in classes:
        raise ValueError("class 0 is the background; ask for structure label values (>= 1)")
    gen = np.random.default_rng(rng)
    b, k, n = labels.shape[0], len(classes), cfg.n_positive + cfg.n_negative
    boxes = np.zeros((b, k, 4), np.float32)
    valid = np.zeros((b, k), bool)
    coords = np.zeros((b, k, n, 2), np.float32)
    point_labels = np.full((b, k, n), -1, np.int64)
    masks = None if cfg.mask_size is None else np.zeros((b, k, *cfg.mask_size), np.float32)
    for i in range(b):
        for j, c in enumerate(classes):
            prompts = slice_prompts_from_mask(labels[i] == c, cfg, gen)
            if prompts is None:
                continue
            valid[i, j] = True
            if prompts.boxes:
                boxes[i, j] = prompts.boxes[0].as_array()
            m = len(prompts.points)
            coords[i, j, :m] = prompts.point_coords
            point_labels[i, j, :m] = prompts.point_labels
            if masks is not None:
                masks[i, j] = prompts.mask
    return BatchPrompts(classes, boxes, valid, coords, point_labels, masks)
