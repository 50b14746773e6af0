"""Shared pieces of the adapters: list volume files, read channels + label into a checked :class:`Case`.

Every adapter's ``load()`` ends in :func:`build_case`, so the rules are the same for all datasets:

* ``image`` is ``(C, Z, Y, X)``, one channel per file, in the spec's channel order. It keeps the
  source dtype (int16 HU for CT, uint8 for EM, float32/int16 for MRI) when every channel has the
  same dtype, otherwise it is float32 — intensity normalisation happens later, in preprocessing.
* ``geometry`` is the first channel's. Every other channel and the label must have the same grid
  shape and geometry; otherwise ``load()`` raises ``ValueError`` naming both files.
* ``label`` is ``(Z, Y, X)`` uint8 (or None), values unchanged (``binarize=True`` maps > 0 to 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters.base import CaseRecord
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.io import Geometry, read_volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Tolerances for "same grid": NIfTI stores geometry as float32, so files written from one
# geometry differ by ~1e-7 relative; a real misregistration is orders of magnitude larger.


def visible(path: Path) -> bool:
    """False for hidden/AppleDouble files ('.DS_Store', '._case.nii.gz') that archives carry along."""
    return not path.name.startswith(".")


def volume_files(folder: Path, suffixes: Sequence[str] = NIFTI_SUFFIXES) -> dict[str, Path]:
    """``{stem: path}`` of the visible files in ``folder`` ending with one of ``suffixes``.

    Raises:
        ValueError: two files share a stem ('a.nii' and 'a.nii.gz').
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and visible(path)):
            continue
        suffix = next((s for s in suffixes if path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        stem = path.name[: -len(suffix)]
        if stem in found:
            raise ValueError(f"{folder}: both {found[stem].name} and {path.name} exist; keep one of them")
        found[stem] = path
    return found


def find_volume(folder: Path, stem: str, suffixes: Sequence[str] = NIFTI_SUFFIXES) -> Path | None:
    """``folder/stem<suffix>`` for the first suffix that exists, else None."""
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_scalar(path: Path, key: str | None = None) -> tuple[np.ndarray, Geometry]:
    """A single-channel volume ``(Z, Y, X)`` and its geometry (a ``(1, Z, Y, X)`` file is squeezed)."""
    volume = read_volume(path, key=key)
    array = volume.array
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"{path}: expected one 3D channel (Z, Y, X), found {array.shape[0]} channels "
                             f"(shape {array.shape}); split it into one file per channel")
        array = array[0]
    return array, volume.geometry


def check_same_grid(case_id: str, file: Path, shape: tuple, geometry: Geometry | None,
                    reference: Path, ref_shape: tuple, ref_geometry: Geometry | None) -> None:
    """Raise ``ValueError`` naming both files when two volumes of a case are not on one grid.

    A geometry of None means "not stored in the file" and is not compared (EM slice folders).
    """
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(f"case {case_id}: {file} has grid shape {tuple(shape)} but {reference} has "
                         f"{tuple(ref_shape)}; both must be on the same (Z, Y, X) grid")
    if geometry is not None and ref_geometry is not None:
        diff = geometry.describe_difference(ref_geometry)
        if diff:
            raise ValueError(f"case {case_id}: geometry of {file} differs from {reference} ({diff}); "
                             f"resample one onto the other or fix the header")


def to_label(array: np.ndarray, path: Path, binarize: bool = False) -> np.ndarray:
    """Integer label map as uint8 (values kept; ``binarize`` maps > 0 to 1 for instance/255 masks)."""
    if binarize:
        return (array > 0).astype(np.uint8)
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise ValueError(f"{path}: label map holds non-integer values (dtype {array.dtype}); "
                         f"a label file must hold integer class values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255, found {array.min()}..{array.max()}")
    return array.astype(np.uint8, copy=False)


def read_label(record: CaseRecord) -> tuple[np.ndarray, Geometry]:
    """``CaseRecord.label_loader`` for layouts whose label is one plain label-map file."""
    array, geometry = read_scalar(record.label_file)
    return to_label(array, record.label_file), geometry


def build_case(record: CaseRecord, spec: DatasetSpec, *, image_keys: Sequence[str | None] | None = None,
               label_key: str | None = None, binarize: bool = False, geometry_stored: bool = True,
               meta: dict | None = None) -> Case:
    """Read a record's channel files and label into a :class:`Case` on one checked grid.

    Args:
        record: the case; ``image_files`` in ``spec.channel_names`` order, one file per channel.
        spec: gives channel and label names.
        image_keys: HDF5 dataset key per image file (None entries for other formats).
        label_key: HDF5 dataset key of the label.
        binarize: label > 0 → 1 (EM instance ids, 0/255 masks).
        geometry_stored: False when the files may carry no geometry (EM slices): then only grid
            shapes are compared.
        meta: extra facts added to the case meta.

    Returns:
        Case with image ``(C, Z, Y, X)``, label ``(Z, Y, X)`` uint8 or None.
    """
    files = list(record.image_files)
    if len(files) != len(spec.channel_names):
        raise ValueError(f"case {record.case_id}: {len(files)} image files for channels "
                         f"{list(spec.channel_names)}")
    keys = list(image_keys) if image_keys is not None else [None] * len(files)
    channels, geometry = [], None
    for file, key in zip(files, keys, strict=True):
        array, file_geometry = read_scalar(file, key)
        if channels:
            check_same_grid(record.case_id, file, array.shape, file_geometry if geometry_stored else None,
                            files[0], channels[0].shape, geometry if geometry_stored else None)
        else:
            geometry = file_geometry
        channels.append(array)
    dtypes = {c.dtype for c in channels}
    # One dtype keeps the source pixels bit-exact; mixed channels need a common type.
    image = np.stack(channels) if len(dtypes) == 1 else np.stack([c.astype(np.float32) for c in channels])
    label = None
    if record.label_file is not None:
        array, label_geometry = read_scalar(record.label_file, label_key)
        check_same_grid(record.case_id, record.label_file, array.shape,
                        label_geometry if geometry_stored else None, files[0], channels[0].shape,
                        geometry if geometry_stored else None)
        label = to_label(array, record.label_file, binarize=binarize)
    case_meta = {
        "dataset": spec.name,
        "subset": record.subset,
        "image_files": [os.fspath(f) for f in files],
        "label_file": os.fspath(record.label_file) if record.label_file is not None else None,
        **record.meta,
        **(meta or {}),
    }
    return Case(case_id=record.case_id, image=image, geometry=geometry, channel_names=spec.channel_names,
                label=label, label_names=dict(spec.label_names), meta=case_meta)
