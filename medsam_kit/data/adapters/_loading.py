"""Shared pieces of the adapters: list volume files, read channels + label into a checked :class:`Case`.

Every adapter's ``load()`` ends in :func:`build_case` (EM in the same helpers), and
``medsam-kit check`` (:mod:`medsam_kit.data.integrity`) applies the same helpers, so what the
checker passes is what loading accepts:

* one channel per file: :func:`single_channel` (a ``(1, Z, Y, X)`` file is squeezed, more
  channels are an error);
* ``image`` is ``(C, Z, Y, X)`` in the spec's channel order. It keeps the source dtype (int16 HU
  for CT, uint8 for EM, float32/int16 for MRI) when every channel has the same dtype, otherwise it
  is float32 — intensity normalisation happens later, in preprocessing;
* one grid: :func:`grid_difference` — every channel and the label have the first channel's
  shape and geometry (within a fraction of a voxel), geometry compared only where the file
  stores one (``volume.meta["stored_geometry"]``);
* one label rule: :func:`label_dtype_error` and :func:`valid_label_values` — whole numbers in
  0..255 (any non-negative whole number where the label is binarised); ``label`` is ``(Z, Y, X)``
  uint8, values unchanged (binarised: > 0 becomes 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters.base import CaseRecord, DiscoveryProblem, report
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.io import Geometry, Volume, read_volume, volume_format

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Largest label value: label maps are stored as uint8.
LABEL_MAX = 255


# ------------------------------------------------------------------------- listing
def visible(path: Path) -> bool:
    """False for hidden/AppleDouble files ('.DS_Store', '._case.nii.gz') that archives carry along."""
    return not path.name.startswith(".")


def listed_file(path: Path) -> bool:
    """A visible file entry of a folder, broken symbolic links included.

    A dangling link must not make a case silently lose its label (or vanish): it is listed, and
    reading it raises ``FileNotFoundError`` naming the link (``check`` reports it as missing).
    """
    return visible(path) and (path.is_symlink() or path.is_file())


def volume_files(folder: Path, suffixes: Sequence[str] = NIFTI_SUFFIXES,
                 problems: list[DiscoveryProblem] | None = None) -> dict[str, Path]:
    """``{stem: path}`` of the listed files in ``folder`` ending with one of ``suffixes`` (any case).

    Raises:
        ValueError: two files share a stem ('a.nii' and 'a.nii.gz'); with a ``problems`` list it
            is recorded there instead and the stem left out.
    """
    found: dict[str, Path] = {}
    clashes: set[str] = set()
    for path in sorted(folder.iterdir()):
        if not listed_file(path):
            continue
        suffix = next((s for s in suffixes if path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        stem = path.name[: -len(suffix)]
        if stem in found:
            report(problems, ValueError(f"{path}: both {found[stem].name} and {path.name} exist in {folder}; "
                                       f"keep one of them"), path, stem)
            clashes.add(stem)
            continue
        found[stem] = path
    return {stem: path for stem, path in found.items() if stem not in clashes}


def find_volume(folder: Path, stem: str, suffixes: Sequence[str] = NIFTI_SUFFIXES) -> Path | None:
    """``folder/stem<suffix>`` for the first of ``suffixes`` present, else None.

    The suffix matches in any letter case ('.NII.GZ'), as in :func:`volume_files`; the stem
    exactly. Broken symbolic links count as present (see :func:`listed_file`).
    """
    if not folder.is_dir():
        return None
    by_suffix = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(stem) and listed_file(path):
            by_suffix.setdefault(path.name[len(stem):].lower(), path)
    return next((by_suffix[s] for s in suffixes if s in by_suffix), None)


def missing_reason(path: Path) -> str:
    """'does not exist', or for a dangling link 'is a broken symbolic link to TARGET'."""
    if path.is_symlink():
        return f"is a broken symbolic link to {os.readlink(path)}"
    return "does not exist"


# ------------------------------------------------------------------------- reading
def hdf5_key(path: Path) -> str | None:
    """'main' for an HDF5 file that holds it (MitoEM / CREMI convention), else None.

    None lets the reader take the file's only dataset; it is also returned for other formats
    and for files h5py cannot open (the reader then reports them).
    """
    try:
        if volume_format(path) != "hdf5":
            return None
    except ValueError:
        return None
    import h5py  # only HDF5 files need it

    try:
        with h5py.File(path, "r") as f:
            return "main" if "main" in f else None
    except OSError:
        return None


def geometry_stored(volume: Volume) -> bool:
    """Whether the file held its geometry (False: plain TIFF/PNG/HDF5, read on the identity grid)."""
    return bool(volume.meta.get("stored_geometry", True))


def single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """``(Z, Y, X)`` of a one-channel array (``(1, Z, Y, X)`` is squeezed).

    Raises:
        ValueError: the file holds several channels (or frames).
    """
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"{path}: expected one 3D channel (Z, Y, X), found {array.shape[0]} channels "
                             f"(shape {array.shape}); split it into one file per channel")
        return array[0]
    return array


def read_scalar(path: Path, key: str | None = None) -> Volume:
    """A single-channel volume: ``array`` ``(Z, Y, X)``, geometry and reader meta (``stored_geometry``).

    Args:
        path: volume file or slice folder.
        key: HDF5 dataset; None takes 'main' when present, else the file's only dataset.

    Raises:
        FileNotFoundError: no such file, or a broken symbolic link (named as such).
        ValueError: unreadable file, or several channels.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {missing_reason(path)}; restore the file or remove the case")
    volume = read_volume(path, key=key if key is not None else hdf5_key(path))
    return Volume(single_channel(volume.array, path), volume.geometry, volume.meta)


def require_finite(array: np.ndarray, path: Path) -> np.ndarray:
    """Raise ``ValueError`` when an image holds NaN/Inf: one such voxel poisons intensity
    normalisation (statistics, z-score) and every loss downstream."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{path}: image holds {bad} NaN/Inf voxels; replace them (e.g. with the background "
                         f"value) before use — `medsam-kit check` lists every such file")
    return array


# ---------------------------------------------------------------------------- grids
def grid_difference(shape: tuple, geometry: Geometry | None, ref_shape: tuple,
                    ref_geometry: Geometry | None) -> tuple[str, str] | None:
    """None when two volumes share one grid, else ``('shape' | 'geometry', what differs)``.

    A geometry of None means "not stored in the file" and is not compared.
    """
    if tuple(shape) != tuple(ref_shape):
        return "shape", f"grid shape (Z, Y, X) {tuple(shape)} vs {tuple(ref_shape)}"
    if geometry is None or ref_geometry is None:
        return None
    diff = geometry.describe_difference(ref_geometry)
    return ("geometry", diff) if diff else None


def stored_geometry(volume: Volume) -> Geometry | None:
    """The volume's geometry, or None when the file held none (then only shapes are compared)."""
    return volume.geometry if geometry_stored(volume) else None


def check_same_grid(case_id: str, file: Path, shape: tuple, geometry: Geometry | None,
                    reference: Path, ref_shape: tuple, ref_geometry: Geometry | None) -> None:
    """Raise ``ValueError`` naming both files when two volumes of a case are not on one grid."""
    difference = grid_difference(shape, geometry, ref_shape, ref_geometry)
    if difference is None:
        return
    kind, text = difference
    if kind == "shape":
        raise ValueError(f"case {case_id}: {file} has grid shape {tuple(shape)} but {reference} has "
                         f"{tuple(ref_shape)}; both must be on the same (Z, Y, X) grid")
    raise ValueError(f"case {case_id}: geometry of {file} differs from {reference} ({text}); "
                     f"resample one onto the other or fix the header")


# --------------------------------------------------------------------------- labels
def label_dtype_error(array: np.ndarray) -> str | None:
    """Why ``array`` cannot be a label map by its values' kind (None when it can).

    Integer and bool arrays can; float arrays only when every value is finite and whole.
    """
    kind = array.dtype.kind
    if kind in "iub":
        return None
    if kind != "f":
        return f"dtype {array.dtype} cannot hold class numbers"
    bad = ~np.isfinite(array)
    bad |= np.mod(np.where(bad, 0, array), 1) != 0
    if bad.any():
        example = array.ravel()[np.flatnonzero(bad.ravel())[0]].item()
        return f"non-integer values (dtype {array.dtype}, e.g. {example!r})"
    return None


def valid_label_values(values: np.ndarray, binarize: bool = False) -> np.ndarray:
    """Boolean mask: which of ``values`` a label file may hold (0..255; binarised: any >= 0)."""
    values = np.asarray(values)
    return (values >= 0) if binarize else (values >= 0) & (values <= LABEL_MAX)


def to_label(array: np.ndarray, path: Path, binarize: bool = False) -> np.ndarray:
    """Integer label map as uint8 (values kept; ``binarize`` maps > 0 to 1 for instance/255 masks).

    Raises:
        ValueError: not whole numbers, or values outside :func:`valid_label_values`.
    """
    error = label_dtype_error(array)
    if error:
        raise ValueError(f"{path}: label map holds {error}; a label file must hold whole class numbers")
    if array.size:
        low, high = array.min(), array.max()
        if not valid_label_values(np.array([low, high]), binarize).all():
            expected = "non-negative" if binarize else f"in 0..{LABEL_MAX}"
            raise ValueError(f"{path}: label values must be {expected}, found {low}..{high}")
    return (array > 0).astype(np.uint8) if binarize else array.astype(np.uint8, copy=False)


def read_label(record: CaseRecord) -> tuple[np.ndarray, Geometry]:
    """``CaseRecord.label_loader`` for layouts whose label is one plain label-map file."""
    volume = read_scalar(record.label_file)
    return to_label(volume.array, record.label_file, record.binarize_label), volume.geometry


# ------------------------------------------------------------------------ building
def build_case(record: CaseRecord, spec: DatasetSpec, *, meta: dict | None = None) -> Case:
    """Read a record's channel files and label into a :class:`Case` on one checked grid.

    Args:
        record: the case; ``image_files`` in ``spec.channel_names`` order, one file per channel;
            ``binarize_label`` maps label values > 0 to 1.
        spec: gives channel and label names.
        meta: extra facts added to the case meta.

    Returns:
        Case with image ``(C, Z, Y, X)``, label ``(Z, Y, X)`` uint8 or None; geometry of the
        first channel.
    """
    files = list(record.image_files)
    if len(files) != len(spec.channel_names):
        raise ValueError(f"case {record.case_id}: {len(files)} image files for channels "
                         f"{list(spec.channel_names)}")
    channels: list[np.ndarray] = []
    reference: Volume | None = None
    for file in files:
        volume = read_scalar(file)
        if reference is None:
            reference = volume
        else:
            check_same_grid(record.case_id, file, volume.spatial_shape, stored_geometry(volume),
                            files[0], reference.spatial_shape, stored_geometry(reference))
        channels.append(require_finite(volume.array, file))
    dtypes = {c.dtype for c in channels}
    # One dtype keeps the source pixels bit-exact; mixed channels need a common type.
    image = np.stack(channels) if len(dtypes) == 1 else np.stack([c.astype(np.float32) for c in channels])
    label = None
    if record.label_file is not None:
        volume = read_scalar(record.label_file)
        check_same_grid(record.case_id, record.label_file, volume.spatial_shape, stored_geometry(volume),
                        files[0], reference.spatial_shape, stored_geometry(reference))
        label = to_label(volume.array, record.label_file, binarize=record.binarize_label)
    case_meta = {
        "dataset": spec.name,
        "subset": record.subset,
        "image_files": [os.fspath(f) for f in files],
        "label_file": os.fspath(record.label_file) if record.label_file is not None else None,
        **record.meta,
        **(meta or {}),
    }
    return Case(case_id=record.case_id, image=image, geometry=reference.geometry,
                channel_names=spec.channel_names, label=label, label_names=dict(spec.label_names),
                meta=case_meta)
