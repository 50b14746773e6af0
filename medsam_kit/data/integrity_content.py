"""What ``medsam-kit check`` finds inside one volume: image content, and the loader's label rule explained.

Pure functions of a ``(Z, Y, X)`` array returning :class:`Finding` s; :mod:`medsam_kit.data.integrity`
adds the file and case. The label rule is loading's (:func:`~medsam_kit.data.adapters._loading.to_label`),
reported with the offending values and their voxel counts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from medsam_kit.data.adapters._loading import LABEL_MAX, label_dtype_error, valid_label_values
from medsam_kit.data.datasets import DatasetSpec

ERROR, WARNING = "error", "warning"
_MAX_LISTED_VALUES = 10


class Finding(NamedTuple):
    """One thing wrong inside a volume (a :class:`~medsam_kit.data.integrity.Problem` without file and case)."""

    kind: str
    message: str
    fix: str
    severity: str = ERROR


def image_findings(array: np.ndarray) -> list[Finding]:
    """Content of one ``(Z, Y, X)`` channel: finite, not all zero, not constant."""
    if array.dtype.kind in "fc":
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            return [Finding("non-finite", f"image holds {nan} NaN and {inf} Inf voxels of {array.size}",
                            "replace them (e.g. with the background value) before use; they poison "
                            "normalisation and losses")]
    low, high = array.min(), array.max()
    if low == high == 0:
        return [Finding("empty-image", f"image is all zero ({array.size} voxels)",
                        "the file holds no image: re-export it or remove the case")]
    if low == high:
        return [Finding("constant-image", f"image holds the single value {low.item()!r} everywhere",
                        "the file holds no image: re-export it or remove the case")]
    return []


def label_findings(array: np.ndarray, spec: DatasetSpec | None, binarize: bool) -> list[Finding]:
    """The loader's label rule (:func:`~medsam_kit.data.adapters._loading.to_label`), explained.

    ``array`` is ``(Z, Y, X)``; ``binarize``: the loader maps > 0 to 1 (EM masks, instance ids).
    """
    error = label_dtype_error(array)
    if error:
        return [Finding("label-dtype", f"label holds {error}; expected whole class numbers",
                        "re-export the label map as uint8 with nearest-neighbour interpolation")]
    findings = []
    if array.dtype.kind == "f":
        findings.append(Finding("label-dtype",
                                f"label is stored as {array.dtype} (values are whole numbers)",
                                "store label maps as uint8 to save space and avoid rounding surprises",
                                WARNING))
        array = array.astype(np.int64)
    values, counts = _value_counts(array)
    findings += _label_value_findings(values, counts, spec, binarize)
    if values.size == 0 or (values.size == 1 and values[0] == 0):
        lesion_free = spec is not None and spec.name == "bhsd"
        fix = ("nothing to do: lesion-free scans are normal in BHSD" if lesion_free else
               "check that this is the right label file; it is kept as a case without foreground")
        findings.append(Finding("empty-label", "label map is all background (0)", fix, WARNING))
    return findings


def _label_value_findings(values: np.ndarray, counts: np.ndarray, spec: DatasetSpec | None,
                          binarize: bool) -> list[Finding]:
    bad = ~valid_label_values(values, binarize)  # what loading rejects
    if binarize:
        expected = "non-negative values (binarised: > 0 is foreground)"
    elif spec is not None:  # what the dataset defines
        allowed = set(spec.label_values) | ({spec.ignore_label} if spec.ignore_label is not None else set())
        bad |= ~np.isin(values, sorted(allowed))
        expected = f"{spec.name} labels " + ", ".join(f"{v} {spec.label_names.get(v, 'ignore')}"
                                                      for v in sorted(allowed))
    else:
        expected = f"0..{LABEL_MAX} (label maps are stored as uint8)"
    if not bad.any():
        return []
    listed = [f"{v} ({c} voxels)" for v, c in zip(values[bad].tolist(), counts[bad].tolist(), strict=True)]
    more = f" and {len(listed) - _MAX_LISTED_VALUES} more" if len(listed) > _MAX_LISTED_VALUES else ""
    fix = "map these voxels to valid classes (or 0), or " + (
        "add the values to labels in dataset.json" if spec is not None and spec.name == "nnunet" else
        "check that DATASET names the right dataset")
    # The BraTS adapter picks ET = 3 or 4 from the file naming, so a mixed-up release shows here.
    if spec is not None and spec.name == "brats" and 4 in values[bad]:
        fix = ("BraTS 2021 labels (ET = 4) under 2023 file names (-t1n ...): relabel 4 to 3, or use the "
               "2021 file names (_t1 ...) that go with them")
    elif spec is not None and spec.name == "brats2021" and 3 in values[bad]:
        fix = ("BraTS 2023 labels (ET = 3) under 2021 file names (_t1 ...): relabel 3 to 4, or use the "
               "2023 file names (-t1n ...) that go with them")
    return [Finding("label-values",
                    f"label values outside {expected}: {', '.join(listed[:_MAX_LISTED_VALUES])}{more}", fix)]


def _value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their voxel counts of an integer array."""
    if array.size:
        low, high = int(array.min()), int(array.max())
        if high - low <= 1 << 16:  # label maps span few values: bincount is linear, unique sorts
            counts = np.bincount(array.ravel().astype(np.intp, copy=False) - low)
            values = np.flatnonzero(counts)
            return values + low, counts[values]
    return np.unique(array, return_counts=True)
