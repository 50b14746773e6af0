"""Dataset integrity checks: find what would break preprocessing or training, before it does.

Like nnU-Net's ``verify_dataset_integrity``, :func:`check_dataset` walks a raw dataset folder
through its adapter and reports every problem it finds as a :class:`Problem` instead of stopping
at the first one. Per case it reads each file once and one file at a time (headers first
where the format has them, then pixels), so memory stays at one volume.

What is checked (``Problem.kind``; see :data:`KINDS`):

* the folder can be discovered (missing folders, missing modalities), case ids are unique;
* every file exists and can be read completely (truncated / corrupt files);
* all channels of a case and its label share one grid: shape, spacing, origin and direction
  (within a thousandth of a voxel, see :meth:`Geometry.describe_difference`);
* images hold finite values and are not empty (all zero) or constant;
* labels are whole numbers within the dataset's label set (offending values listed with their
  voxel counts); an all-background label is only a warning (lesion-free BHSD scans are normal);
* for nnU-Net folders, ``dataset.json`` agrees with the files (``numTraining``, ``file_ending``).

Only ``severity == 'error'`` problems fail a check; warnings are notes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.io import Geometry, Volume, read_image_header, read_volume, volume_format

__all__ = ["Problem", "KINDS", "ERROR", "WARNING", "check_dataset", "check_record"]

ERROR, WARNING = "error", "warning"
#: Tolerance for spacing/origin (mm) and direction cosines. NIfTI stores geometry as float32,
#: so files written from the same grid agree to ~1e-5; real misregistration is far larger.

#: Every problem kind, with what it means (also shown by ``medsam-kit check --help``).
KINDS: dict[str, str] = {
    "discovery": "the folder does not have the dataset's layout (missing folder, file or modality)",
    "duplicate-case-id": "two cases share one id",
    "missing-file": "a file the layout lists does not exist",
    "unreadable": "a file cannot be read completely (truncated, corrupt, not that format)",
    "shape-mismatch": "a channel or the label has a different grid shape than the case's image",
    "geometry-mismatch": "a channel or the label has a different spacing, origin or direction",
    "non-finite": "an image holds NaN or Inf values",
    "empty-image": "an image is all zero",
    "constant-image": "an image holds a single value",
    "label-dtype": "a label map is not stored as whole numbers (warning when float but whole-valued)",
    "label-values": "a label map holds values outside the dataset's label set",
    "empty-label": "a label map is all background (warning only)",
    "dataset-json": "nnU-Net dataset.json is missing, invalid or disagrees with the files",
    "check-error": "the check itself failed on a case (reported instead of crashing)",
}

# Datasets whose raw label files are binarised (> 0) by the adapter: EM masks are 0/255 stacks
# or instance ids, so any non-negative whole number is a valid raw value.
_BINARISED_LABELS = {"em"}
_MAX_LISTED_VALUES = 10


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        file: the file (or folder) at fault, or None when it is about the dataset as a whole.
        case_id: the case it belongs to, when known.
        kind: one of :data:`KINDS`.
        message: what is wrong (expected vs found).
        fix: what to do about it.
        severity: 'error' (fails the check) or 'warning'.
    """

    file: Path | None
    case_id: str | None
    kind: str
    message: str
    fix: str
    severity: str = ERROR

    def __str__(self) -> str:
        if self.file is not None:
            where = str(self.file)
        else:
            where = f"case {self.case_id}" if self.case_id else "dataset"
        # Exception texts may span lines; a problem is always one line.
        return re.sub(r"\s*[\r\n]+\s*", " ", f"{where}: {self.message} — {self.fix}")


@dataclass
class _Grid:
    """Spatial grid of one file: ``shape`` is ``(Z, Y, X)``; geometry None when the file stores none."""

    shape: tuple[int, ...]
    geometry: Geometry | None


def check_dataset(dataset: str | DatasetAdapter, root: str | Path,
                  progress: Callable[[int, int], None] | None = None) -> list[Problem]:
    """Check a raw dataset folder and return every problem found (an empty list when clean).

    Args:
        dataset: registry name ('acdc', 'bhsd', 'brats', 'brats2021', 'em', 'nnunet') or an
            adapter instance (anything with ``name``, ``spec(root)`` and ``discover(root)``).
        root: the dataset's raw folder.
        progress: optional ``progress(done, total)`` callback, called with ``(0, total)`` after
            discovery and after each case; ``total`` is the number of cases checked.

    Returns:
        Problems in discovery order (dataset-level first, then case by case).

    Raises:
        ValueError / KeyError: unknown dataset name (from the adapter registry). Bad data never
        raises: it becomes a :class:`Problem`.
    """
    adapter = _resolve_adapter(dataset)
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        return [Problem(root, None, "discovery", f"dataset folder {what}",
                        f"give the root folder of the raw {adapter.name or 'dataset'} layout")]
    problems: list[Problem] = []
    spec: DatasetSpec | None = None
    try:
        spec = adapter.spec(root)
    except Exception as exc:  # a bad folder must never crash the check
        problems.append(_discovery_problem(root, exc, adapter.name))
    records: list[CaseRecord] | None = None
    try:
        records = list(adapter.discover(root))
    except Exception as exc:
        problem = _discovery_problem(root, exc, adapter.name)
        if all(p.message != problem.message for p in problems):  # spec() often fails for the same reason
            problems.append(problem)
    if adapter.name == "nnunet":
        problems = _merge_nnunet_json(root, problems, check_nnunet_json(root, records))
    records = records or []
    problems += _duplicate_ids(records)
    if progress:
        progress(0, len(records))
    for done, record in enumerate(records, 1):
        problems += check_record(record, spec)
        if progress:
            progress(done, len(records))
    return problems


def check_record(record: CaseRecord, spec: DatasetSpec | None) -> list[Problem]:
    """All per-case checks for one record (files, grids, image and label content).

    Reads one file at a time, each once: headers of all files first (cheap), then pixels.
    Any exception is reported as a problem of the file (or case) being checked.
    """
    try:
        return _check_record(record, spec)
    except Exception as exc:  # a bug or an unforeseen file must not end the whole check
        return [Problem(None, record.case_id, "check-error", f"check failed: {type(exc).__name__}: {exc}",
                        "inspect this case by hand; please report the error if the files look fine")]


def _check_record(record: CaseRecord, spec: DatasetSpec | None) -> list[Problem]:
    case = record.case_id
    image_files = list(dict.fromkeys(Path(p) for p in record.image_files))  # channels may share a file
    label_file = Path(record.label_file) if record.label_file is not None else None
    files = image_files + ([label_file] if label_file is not None else [])
    problems: list[Problem] = []
    readable: list[Path] = []
    for path in files:
        if path.exists():
            readable.append(path)
        else:
            role = "label" if path == label_file else "image"
            problems.append(Problem(path, case, "missing-file", f"{role} file of case {case} does not exist",
                                    "restore the file, or remove the case from the folder"))
    grids: dict[Path, _Grid] = {}
    for path in list(readable):
        try:
            header = read_image_header(path)
        except Exception as exc:
            problems.append(_unreadable(path, case, exc))
            readable.remove(path)
            continue
        if header is not None:
            grids[path] = _Grid(tuple(header[0][-3:]), header[1])
    for path in readable:
        try:
            volume = read_volume(path, key=_hdf5_key(path))
        except Exception as exc:
            problems.append(_unreadable(path, case, exc))
            grids.pop(path, None)
            continue
        if path not in grids:
            grids[path] = _Grid(volume.spatial_shape, _stored_geometry(path, volume))
        if path == label_file:
            problems += _check_label(path, case, volume, spec)
        else:
            problems += _check_image(path, case, volume)
        del volume  # one volume in memory at a time
    return problems + _check_grids(case, [p for p in image_files if p in grids], label_file, grids)


# ----------------------------------------------------------------------------- grids
def _check_grids(case: str, images: list[Path], label: Path | None,
                 grids: dict[Path, _Grid]) -> list[Problem]:
    """Every channel file and the label must sit on the grid most channel files agree on."""
    if not images:
        return []

    def same(a: _Grid, b: _Grid) -> bool:
        return a.shape == b.shape and not _geometry_difference(a, b)

    # Reference = the channel file most others agree with, so the odd one out gets the blame.
    reference = max(images, key=lambda p: sum(same(grids[p], grids[q]) for q in images))
    ref = grids[reference]
    problems = []
    others = [p for p in images if p != reference] + ([label] if label in grids else [])
    for path in others:
        role = "label" if path == label else "image"
        grid = grids[path]
        if grid.shape != ref.shape:
            fix = ("resample the label with nearest-neighbour interpolation onto the image grid"
                   if role == "label" else "resample or crop it onto the grid of the other channels")
            message = f"{role} grid (Z, Y, X) {grid.shape} differs from {reference.name} {ref.shape}"
            problems.append(Problem(path, case, "shape-mismatch", message, fix))
        elif difference := _geometry_difference(grid, ref):
            fix = (f"if only the header is wrong, copy the geometry of {reference.name} into it; otherwise "
                   "resample it onto that grid (channels and label must be co-registered)")
            problems.append(Problem(path, case, "geometry-mismatch",
                                    f"{role} geometry differs from {reference.name}: {difference}", fix))
    return problems


def _geometry_difference(a: _Grid, b: _Grid) -> str:
    """'' when both grids sit at the same place (or one stores no geometry), else what differs.

    Uses :meth:`Geometry.describe_difference`, whose tolerance is a fraction of a voxel, so 1 mm
    MRI and 5 nm EM grids are judged alike.
    """
    if a.geometry is None or b.geometry is None:  # a file without stored geometry takes its image's
        return ""
    return a.geometry.describe_difference(b.geometry)


def _stored_geometry(path: Path, volume: Volume) -> Geometry | None:
    """The volume's geometry, or None where the format holds none and the reader used a default.

    TIFF / PNG / HDF5 files from other tools carry no world geometry; the readers then return
    the identity grid, which says nothing about whether the file matches its image.
    """
    if volume_format(path) in ("nifti", "nrrd", "mha"):
        return volume.geometry
    return None if volume.geometry == Geometry() else volume.geometry


def _hdf5_key(path: Path) -> str | None:
    """'main' for HDF5 files that hold it (MitoEM / CREMI convention), else let the reader choose."""
    if path.is_dir() or volume_format(path) != "hdf5":
        return None
    import h5py

    with h5py.File(path, "r") as f:
        return "main" if "main" in f else None


# --------------------------------------------------------------------------- content
def _check_image(path: Path, case: str, volume: Volume) -> list[Problem]:
    array = volume.array
    channels = [array] if array.ndim == 3 else list(array)
    problems = []
    for index, channel in enumerate(channels):
        where = f"image (channel {index})" if len(channels) > 1 else "image"
        if channel.dtype.kind in "fc":
            nan, inf = int(np.isnan(channel).sum()), int(np.isinf(channel).sum())
            if nan or inf:
                problems.append(_non_finite(path, case, where, nan, inf, channel.size))
                continue
        low, high = channel.min(), channel.max()
        if low == high == 0:
            problems.append(Problem(path, case, "empty-image", f"{where} is all zero ({channel.size} voxels)",
                                    "the file holds no image: re-export it or remove the case"))
        elif low == high:
            problems.append(Problem(path, case, "constant-image",
                                    f"{where} holds the single value {low.item()!r} everywhere",
                                    "the file holds no image: re-export it or remove the case"))
    return problems


def _non_finite(path: Path, case: str, where: str, nan: int, inf: int, size: int) -> Problem:
    return Problem(path, case, "non-finite", f"{where} holds {nan} NaN and {inf} Inf voxels of {size}",
                   "replace them (e.g. with the background value) before use; they poison normalisation "
                   "and losses")




def _check_label(path: Path, case: str, volume: Volume, spec: DatasetSpec | None) -> list[Problem]:
    array = volume.array
    if array.ndim == 4:
        if array.shape[0] != 1:
            return [Problem(path, case, "shape-mismatch",
                            f"label holds {array.shape[0]} channels {array.shape}; "
                            "expected one (Z, Y, X) map",
                            "store one integer label map per case (class values, not one-hot channels)")]
        array = array[0]
    problems = []
    if array.dtype.kind in "fc":
        whole = np.isfinite(array).all() and bool(np.all(np.mod(array, 1) == 0))
        if not whole:
            return [Problem(path, case, "label-dtype",
                            f"label is {array.dtype} with non-integer values (e.g. "
                            f"{_first_fractional(array)!r}); expected whole class numbers",
                            "re-export the label map as uint8 with nearest-neighbour interpolation")]
        problems.append(Problem(path, case, "label-dtype",
                                f"label is stored as {array.dtype} (values are whole numbers)",
                                "store label maps as uint8 to save space and avoid rounding surprises",
                                WARNING))
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        return [Problem(path, case, "label-dtype", f"label has dtype {array.dtype}; expected an integer type",
                        "re-export the label map as uint8")]
    values, counts = _value_counts(array)
    if spec is not None:
        problems += _check_label_values(path, case, values, counts, spec)
    if values.size == 0 or (values.size == 1 and values[0] == 0):
        lesion_free = spec is not None and spec.name == "bhsd"
        fix = ("nothing to do: lesion-free scans are normal in BHSD" if lesion_free else
               "check that this is the right label file; it is kept as a case without foreground")
        problems.append(Problem(path, case, "empty-label", "label map is all background (0)", fix, WARNING))
    return problems


def _check_label_values(path: Path, case: str, values: np.ndarray, counts: np.ndarray,
                        spec: DatasetSpec) -> list[Problem]:
    if spec.name in _BINARISED_LABELS:
        bad = values < 0
        expected = "non-negative values (binarised: > 0 is foreground)"
    else:
        allowed = set(spec.label_values) | ({spec.ignore_label} if spec.ignore_label is not None else set())
        bad = ~np.isin(values, sorted(allowed))
        expected = f"{spec.name} labels " + ", ".join(f"{v} {spec.label_names.get(v, 'ignore')}"
                                                      for v in sorted(allowed))
    if not bad.any():
        return []
    listed = [f"{v} ({c} voxels)" for v, c in zip(values[bad].tolist(), counts[bad].tolist(), strict=True)]
    more = f" and {len(listed) - _MAX_LISTED_VALUES} more" if len(listed) > _MAX_LISTED_VALUES else ""
    fix = "map these voxels to valid classes (or 0), or " + (
        "add the values to labels in dataset.json" if spec.name == "nnunet" else
        "check that DATASET names the right dataset")
    # The BraTS adapter picks ET = 3 or 4 from the file naming, so a mixed-up release shows here.
    if spec.name == "brats" and 4 in values[bad]:
        fix = ("BraTS 2021 labels (ET = 4) under 2023 file names (-t1n ...): relabel 4 to 3, or use the "
               "2021 file names (_t1 ...) that go with them")
    elif spec.name == "brats2021" and 3 in values[bad]:
        fix = ("BraTS 2023 labels (ET = 3) under 2021 file names (_t1 ...): relabel 3 to 4, or use the "
               "2023 file names (-t1n ...) that go with them")
    return [Problem(path, case, "label-values",
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


def _first_fractional(array: np.ndarray) -> float:
    flat = array.ravel()
    bad = np.flatnonzero(~np.isfinite(flat) | (np.mod(np.nan_to_num(flat), 1) != 0))
    return float(flat[bad[0]]) if bad.size else float("nan")


# --------------------------------------------------------------------- dataset level
def _duplicate_ids(records: list[CaseRecord]) -> list[Problem]:
    first: dict[str, CaseRecord] = {}
    problems = []
    for record in records:
        if record.case_id in first:
            other = first[record.case_id]
            problems.append(Problem(
                _record_file(record), record.case_id, "duplicate-case-id",
                f"case id {record.case_id} ({record.subset}) is also used by {_record_file(other)} "
                f"({other.subset})",
                "rename or remove one of them: predictions, splits and caches are keyed by case id"))
        else:
            first[record.case_id] = record
    return problems


def check_nnunet_json(root: Path, records: list[CaseRecord] | None) -> list[Problem]:
    """``dataset.json`` against the files: required keys, ``numTraining``, ``file_ending``, background 0.

    ``records`` are the adapter's cases, or None when discovery failed (then training cases are
    counted as the channel-0 files in ``imagesTr``, as nnU-Net does).
    """
    path = root / "dataset.json"
    fix_keys = "write dataset.json as nnU-Net v2 does: channel_names, labels, numTraining, file_ending"
    if not path.is_file():
        return [Problem(path, None, "dataset-json", "dataset.json does not exist", fix_keys)]
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"top level is a {type(meta).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [Problem(path, None, "dataset-json", f"cannot parse dataset.json: {exc}",
                        "fix the JSON syntax")]
    missing = [k for k in ("labels", "numTraining", "file_ending") if k not in meta]
    if "channel_names" not in meta and "modality" not in meta:  # 'modality' is nnU-Net v1's name
        missing.insert(0, "channel_names")
    if missing:
        return [Problem(path, None, "dataset-json", f"dataset.json lacks {', '.join(missing)}", fix_keys)]
    problems = []
    labels = meta["labels"]
    if not isinstance(labels, dict) or labels.get("background") not in (0, [0]):
        problems.append(Problem(path, None, "dataset-json",
                                f"labels must map 'background' to 0, got {labels!r}",
                                'add "background": 0 to labels'))
    ending = str(meta["file_ending"])
    if records is not None:
        labeled = sum(1 for r in records if r.label_file is not None)
    else:
        images = root / "imagesTr"
        labeled = len(list(images.glob(f"[!.]*_0000{ending}"))) if images.is_dir() else 0
    if meta["numTraining"] != labeled:
        problems.append(Problem(path, None, "dataset-json",
                                f"numTraining is {meta['numTraining']!r} but imagesTr holds {labeled} "
                                "training cases",
                                f"set numTraining to {labeled}, or add the missing cases"))
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        if not (root / folder).is_dir():
            continue
        for file in sorted((root / folder).iterdir()):
            if not file.name.startswith(".") and not file.name.endswith(ending):
                problems.append(Problem(file, None, "dataset-json",
                                        f"file ending differs from dataset.json file_ending {ending!r} "
                                        "(nnU-Net ignores this file)",
                                        f"convert it to {ending}, or remove it (or fix file_ending)"))
    return problems


def _merge_nnunet_json(root: Path, adapter_problems: list[Problem],
                       json_problems: list[Problem]) -> list[Problem]:
    """Adapter errors about dataset.json are dataset-json problems; drop them when our own say more."""
    path = root / "dataset.json"
    merged = []
    for problem in adapter_problems:
        if problem.file == path:
            if json_problems:
                continue
            problem = Problem(path, None, "dataset-json", problem.message, "fix dataset.json and rerun")
        merged.append(problem)
    return merged + json_problems


# ------------------------------------------------------------------------- helpers
def _resolve_adapter(dataset: str | DatasetAdapter) -> DatasetAdapter:
    if not isinstance(dataset, str):
        return dataset
    from medsam_kit.data.adapters import get_adapter  # the registry imports every adapter module

    return get_adapter(dataset)


def _record_file(record: CaseRecord) -> Path | None:
    files = [*record.image_files, *([record.label_file] if record.label_file is not None else [])]
    return Path(files[0]) if files else None


def _unreadable(path: Path, case: str, exc: Exception) -> Problem:
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc) or type(exc).__name__
    prefix = f"{path}: "
    if text.startswith(prefix):  # read_volume names the file; it is already the problem's file
        text = text[len(prefix):]
    if not isinstance(exc, ValueError | OSError | KeyError):
        text = f"{type(exc).__name__}: {text}"
    return Problem(path, case, "unreadable", f"cannot read: {text}",
                   "the file is truncated or corrupt: download or export it again")


def _discovery_problem(root: Path, exc: Exception, name: str) -> Problem:
    """Turn an adapter's exception into a problem, naming the file its message starts with."""
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc) or type(exc).__name__
    if not isinstance(exc, ValueError | OSError | KeyError):
        text = f"{type(exc).__name__}: {text}"
    file = root
    head, sep, rest = text.partition(": ")
    if sep and head.startswith(str(root)):
        file, text = Path(head), rest
    elif named := re.search(re.escape(str(root)) + r"[^\s;,)'\"]*", text):  # "... (expected ROOT/x.nii.gz)"
        file = Path(named.group(0).rstrip(":."))
    return Problem(file, None, "discovery", text,
                   f"arrange the folder in the raw {name or 'dataset'} layout (see data_prep/) and rerun")
