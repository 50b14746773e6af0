"""Segmentation metrics for binary masks on an anisotropic voxel grid, distances in millimetres.

All functions take masks in array order (``(Z, Y, X)`` for volumes; any N-D array works) and
``spacing_zyx`` in the **same array order** (use :attr:`Geometry.spacing_zyx`).

Definitions (chosen to agree with MONAI's ``compute_*`` functions, see tests/engine/test_metrics.py):

* **Dice** ``2|P∩G| / (|P|+|G|)``, **IoU** ``|P∩G| / |P∪G|`` (voxel counts).
* **Surface** of a mask: its voxels with at least one face neighbour (6-connectivity in 3D)
  in the background. Outside the array counts as background, so a mask touching the volume
  edge has a surface there (same as MONAI's ``get_mask_edges``, which pads before eroding).
* **Surface distances**: for each surface voxel of one mask, the Euclidean distance in mm
  (voxel centre to voxel centre) to the nearest surface voxel of the other mask.
* **HD95**: the larger of the two directed 95th percentiles (linear interpolation) — the
  BraTS/MONAI definition, not the 95th percentile of the pooled distances.
* **ASSD**: mean of the pooled distances of both directions.
* **NSD** (normalised surface Dice, Nikolov et al. 2021): fraction of surface voxels of both
  masks that lie within ``tolerance`` mm of the other surface. Surface voxels are counted,
  not weighted by surface-element area (MONAI's ``use_subvoxels=False``; DeepMind's
  ``surface-distance`` package weights by area and gives slightly different numbers).

Empty masks (conventions, so no case is silently dropped):

================  =====  =====  ======  ======  =====
case              Dice   IoU    HD95    ASSD    NSD
================  =====  =====  ======  ======  =====
both empty        1      1      0       0       1
one empty         0      0      NaN     NaN     0
================  =====  =====  ======  ======  =====

A distance to an empty mask is undefined, so per case it is NaN (not +inf or an arbitrary
number): ``metrics.csv`` says what was measured. Leaving NaN out of a mean would reward a
missed structure, though, so summaries count it as the worst possible distance,
:func:`image_diagonal_mm` of the ground truth (BraTS scoring does the same with the 373.13 mm
diagonal of its 240 × 240 × 155 mm grid) and report how many values were NaN (see
:mod:`medsam_kit.engine.evaluation_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from medsam_kit.data.regions import region_mask

#: Metric keys of :func:`mask_metrics`, in report order.
METRIC_NAMES = ("dice", "iou", "hd95_mm", "assd_mm", "nsd")

_NAN = float("nan")


def image_diagonal_mm(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> float:
    """Length in mm of the diagonal of a grid's extent, ``sqrt(sum((n * s) ** 2))``.

    No surface distance on the grid can exceed it (voxel centres lie inside the extent), so it is
    the worst-case HD95/ASSD. BraTS: ``(155, 240, 240)`` at 1 mm gives 373.13 mm.

    Args:
        shape_zyx: grid shape ``(Z, Y, X)``.
        spacing_zyx: voxel size in mm in the same array order.
    """
    extent = np.asarray(shape_zyx, dtype=float) * np.asarray(spacing_zyx, dtype=float)
    return float(np.sqrt(np.sum(extent**2)))


def _check_pair(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray,
                                                                                          tuple[float, ...]]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != gt.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must have {gt.ndim} positive values in array order, got {spacing}")
    return pred, gt, spacing


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the voxels of ``mask`` that touch the background (face connectivity).

    Args:
        mask: boolean ``(Z, Y, X)`` (or any N-D) array.

    Returns:
        Boolean array of the same shape; empty when ``mask`` is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    # border_value=0: outside the array is background, so the volume edge is a surface.
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...]:
    """Tight bounding box of ``pred | gt``.

    Cropping to it changes no metric: every surface voxel of both masks lies inside, so the
    nearest surface voxel of a distance query is inside too, and outside the box is background
    for both masks, exactly what erosion's ``border_value=0`` assumes at the crop faces.
    """
    union = pred | gt
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing_zyx: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm between the surfaces of two non-empty masks, both directions.

    Args:
        pred: boolean ``(Z, Y, X)`` prediction mask (non-empty).
        gt: boolean ``(Z, Y, X)`` ground-truth mask (non-empty), same shape.
        spacing_zyx: voxel size in mm in array order.

    Returns:
        ``(pred_to_gt, gt_to_pred)``: 1-D float64 arrays, one distance per surface voxel of
        ``pred`` (to the nearest ``gt`` surface voxel) and of ``gt`` (to ``pred``).
    """
    pred, gt, spacing = _check_pair(pred, gt, spacing_zyx)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks (see the empty-mask conventions)")
    box = _union_box(pred, gt)
    pred_surface, gt_surface = surface_voxels(pred[box]), surface_voxels(gt[box])
    # One exact EDT per surface (scipy, anisotropic `sampling`) gives every distance that
    # HD95, ASSD and NSD need. MONAI's compute_* functions each recompute edges and distances
    # and need one-hot (B, C, ...) torch tensors, so calling them per metric would triple the work.
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_gt[pred_surface], to_pred[gt_surface]


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks (1, 1 when both are empty)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_pred + n_gt == 0:
        return 1.0, 1.0
    intersection = int(np.count_nonzero(pred & gt))
    return 2.0 * intersection / (n_pred + n_gt), intersection / (n_pred + n_gt - intersection)


def mask_metrics(pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float],
                 nsd_tolerance_mm: float) -> dict[str, float]:
    """All metrics of one binary mask pair, from one set of surface distances.

    Args:
        pred: boolean ``(Z, Y, X)`` prediction (any non-zero value counts as foreground).
        gt: boolean ``(Z, Y, X)`` ground truth, same shape.
        spacing_zyx: voxel size in mm in array order ``(z, y, x)``.
        nsd_tolerance_mm: NSD tolerance in mm (>= 0).

    Returns:
        ``{"dice", "iou", "hd95_mm", "assd_mm", "nsd"}`` as floats (see the module docstring
        for empty masks) plus ``"gt_voxels"`` and ``"pred_voxels"`` as ints.
    """
    pred, gt, spacing = _check_pair(pred, gt, spacing_zyx)
    if not np.isfinite(nsd_tolerance_mm) or nsd_tolerance_mm < 0:
        raise ValueError(f"nsd_tolerance_mm must be a finite value >= 0, got {nsd_tolerance_mm}")
    dice, iou = dice_iou(pred, gt)
    counts = {"gt_voxels": int(np.count_nonzero(gt)), "pred_voxels": int(np.count_nonzero(pred))}
    if counts["gt_voxels"] == 0 and counts["pred_voxels"] == 0:
        return {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0, "nsd": 1.0, **counts}
    if counts["gt_voxels"] == 0 or counts["pred_voxels"] == 0:
        return {"dice": 0.0, "iou": 0.0, "hd95_mm": _NAN, "assd_mm": _NAN, "nsd": 0.0, **counts}
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    hd95 = max(float(np.percentile(to_gt, 95)), float(np.percentile(to_pred, 95)))
    n_surface = to_gt.size + to_pred.size
    assd = float(to_gt.sum() + to_pred.sum()) / n_surface
    within = int(np.count_nonzero(to_gt <= nsd_tolerance_mm) + np.count_nonzero(to_pred <= nsd_tolerance_mm))
    return {"dice": dice, "iou": iou, "hd95_mm": hd95, "assd_mm": assd, "nsd": within / n_surface, **counts}


def class_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray, classes: Mapping[str, Sequence[int]],
                  spacing_zyx: Sequence[float], nsd_tolerance_mm: float,
                  ignore_label: int | None = None) -> dict[str, dict[str, float]]:
    """Metrics per class of two integer label maps on the same grid.

    Args:
        pred_labels: integer ``(Z, Y, X)`` predicted label map.
        gt_labels: integer ``(Z, Y, X)`` ground-truth label map, same shape.
        classes: ``{name: label values}``; a class with several values is a region (BraTS
            ``WT=(1, 2, 3)``). Use :meth:`DatasetSpec.evaluation_classes`.
        spacing_zyx: voxel size in mm in array order ``(z, y, x)``.
        nsd_tolerance_mm: NSD tolerance in mm.
        ignore_label: ground-truth value whose voxels are left out of every class, in both
            maps (nnU-Net's ignore label); None for none.

    Returns:
        ``{class name: mask_metrics(...)}`` in the order of ``classes``.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from ground truth shape "
                         f"{gt_labels.shape}")
    keep = None if ignore_label is None else gt_labels != ignore_label
    results = {}
    for name, values in classes.items():
        pred, gt = region_mask(pred_labels, values), region_mask(gt_labels, values)
        if keep is not None:
            pred, gt = pred & keep, gt & keep
        results[name] = mask_metrics(pred, gt, spacing_zyx, nsd_tolerance_mm)
    return results
