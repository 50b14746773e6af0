"""Label maps → boolean masks of named classes and regions (BraTS WT/TC/ET, nnU-Net region labels).

A *region* is a named set of label values scored as one object: BraTS' whole tumour is
``WT = {NCR, ED, ET}``. Which values make a region is data (:attr:`DatasetSpec.regions`), so the
same code serves BraTS 2021 (ET = 4), BraTS 2023 (ET = 3) and region-based nnU-Net datasets.
Metrics, prompts and samplers use these helpers instead of hard-coding label values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from medsam_kit.data.datasets import DatasetSpec


def region_mask(label: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Voxels whose label is one of ``values``.

    Args:
        label: integer label map of any shape, e.g. ``(Z, Y, X)``.
        values: label values that make the region (e.g. ``(1, 2, 3)`` for BraTS 2023 WT).

    Returns:
        bool array of ``label``'s shape.
    """
    values = np.asarray(sorted({int(v) for v in values}), dtype=np.int64)
    if values.size == 0:
        raise ValueError("a region needs at least one label value")
    return np.isin(label, values)


def region_masks(label: np.ndarray,
                 regions: DatasetSpec | Mapping[str, Iterable[int]]) -> dict[str, np.ndarray]:
    """One mask per region of a spec (or of a ``{name: values}`` mapping), in the mapping's order.

    Args:
        label: integer label map ``(Z, Y, X)`` (any shape works).
        regions: a :class:`DatasetSpec` with ``regions`` (BraTS: WT, TC, ET) or a mapping
            ``{name: label values}``.

    Returns:
        ``{name: bool array of label's shape}``.

    Raises:
        ValueError: the spec defines no regions (score its labels with :func:`class_masks`).
    """
    if isinstance(regions, DatasetSpec):
        if not regions.regions:
            raise ValueError(f"dataset spec {regions.name!r} defines no regions; use class_masks() to get "
                             f"one mask per label ({', '.join(regions.foreground_labels.values())})")
        regions = regions.regions
    return {name: region_mask(label, values) for name, values in regions.items()}


def class_masks(label: np.ndarray, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Masks of every class a spec scores: each foreground label, then each region.

    Follows :meth:`DatasetSpec.evaluation_classes` (e.g. BraTS 2023: NCR, ED, ET labels, then
    WT, TC, ET regions — the region ET replaces the label ET of the same name and values).

    Args:
        label: integer label map ``(Z, Y, X)``.
        spec: the dataset spec.

    Returns:
        ``{class name: bool array of label's shape}``.
    """
    return {name: region_mask(label, values) for name, values in spec.evaluation_classes().items()}
