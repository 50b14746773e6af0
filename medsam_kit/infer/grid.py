"""Moving prompts and probability maps between the input grid and the preprocessed grid.

Prompts are given on the grid of the volume the user has (voxel coordinates of the *input*);
the model sees the preprocessed grid (in-plane resampled, optionally reoriented). Both grids share
the world (LPS mm) space, so positions are mapped input index → world → preprocessed index
(through each grid's :class:`~medsam_kit.io.Geometry`, oblique directions included).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from medsam_kit.io.geometry import Geometry
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts

_SLICE_TOLERANCE = 0.5 + 1e-3  # voxels: a mapped prompt must stay on one slice of the new grid


def _map_positions(xy: np.ndarray, k: int, source: Geometry, target: Geometry) -> np.ndarray:
    """``(N, 2)`` continuous ``(i, j)`` on slice ``k`` of ``source`` → ``(N, 3)`` ``(i, j, k)`` of ``target``."""
    ijk = np.column_stack([xy, np.full(len(xy), float(k))])
    world = [source.index_to_world(p) for p in ijk]
    return np.asarray([target.world_to_index(w) for w in world], dtype=np.float64).reshape(-1, 3)


def _target_slice(ks: np.ndarray, where: str) -> int:
    k = int(round(float(np.mean(ks))))
    if np.any(np.abs(ks - k) > _SLICE_TOLERANCE):
        raise ValueError(f"{where}: the prompt does not lie on one slice of the preprocessed grid (index z "
                         f"{np.round(ks, 2).tolist()}); the plan reorients the volume, give prompts on the "
                         f"preprocessed grid or use a plan without 'orientation'")
    return k


def map_prompts(prompts: PromptSet, source: Geometry, target: Geometry, target_shape_zyx: Sequence[int]) -> PromptSet:
    """Prompts on the ``source`` grid → the same places on the ``target`` grid (boxes clipped to it).

    Boxes map their edges (``x0 - 0.5`` is the centre-index of the left edge) and are re-boxed
    axis-aligned on the target slice; points map their positions. Mask prompts are dropped when
    the grids differ (they cover the source slice's pixels only).
    """
    nz, ny, nx = (int(s) for s in target_shape_zyx)
    out = PromptSet()
    for label, k, slice_prompts in prompts:
        where = f"label {label}, slice {k}"
        boxes, ks = [], []
        for box in slice_prompts.boxes:
            corners = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x0, box.y1], [box.x1, box.y1]]) - 0.5
            mapped = _map_positions(corners, k, source, target)
            ks.extend(mapped[:, 2])
            lo, hi = mapped[:, :2].min(0) + 0.5, mapped[:, :2].max(0) + 0.5
            boxes.append(BoxPrompt(lo[0], lo[1], hi[0], hi[1]).clipped((ny, nx)))
        coords = np.zeros((0, 2))
        if len(slice_prompts.points):
            mapped = _map_positions(slice_prompts.point_coords, k, source, target)
            ks.extend(mapped[:, 2])
            coords = np.clip(mapped[:, :2], -0.5, [nx - 0.5, ny - 0.5])
        new_k = _target_slice(np.asarray(ks), where) if ks else k
        if not 0 <= new_k < nz:
            raise ValueError(f"{where}: maps to slice {new_k}, outside the preprocessed grid (Z = {nz})")
        mapped_prompts = SlicePrompts(tuple(boxes), PointPrompts(coords, slice_prompts.point_labels.copy()))
        if not mapped_prompts.is_empty:
            out.add(label, new_k, mapped_prompts)
    return out


def resample_linear(array: np.ndarray, source: Geometry, target: Geometry, target_shape_zyx: Sequence[int]
                    ) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` float map from ``source`` onto ``target``'s grid (linear, world space)."""
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in source.spacing])
    image.SetOrigin([float(o) for o in source.origin])
    image.SetDirection([float(d) for d in source.direction_matrix.reshape(-1)])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in tuple(target_shape_zyx)[::-1]])
    resampler.SetOutputSpacing([float(s) for s in target.spacing])
    resampler.SetOutputOrigin([float(o) for o in target.origin])
    resampler.SetOutputDirection([float(d) for d in target.direction_matrix.reshape(-1)])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)  # edge voxels up to half a voxel outside the source
    return sitk.GetArrayFromImage(resampler.Execute(image)).astype(np.float32)
