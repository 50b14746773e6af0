"""Dataset integrity checks: find what would break preprocessing or training, before it does.

Like nnU-Net's ``verify_dataset_integrity``, :func:`check_dataset` walks a raw dataset folder
through its adapter and reports every problem it finds as a :class:`Problem` instead of stopping
at the first one. Per case it reads each file once and one file at a time (headers first
where the format has them, then pixels), so memory stays at one volume.

What is checked (``Problem.kind``; see :data:`KINDS`):

* discovery (missing modalities, masks without images, ...) is non-strict: every bad case is
  reported and the others are still checked; case ids are unique;
* every file exists (a broken symbolic link counts as missing) and can be read completely;
* one channel per file, and all channels of a case and its label share one grid: shape, spacing,
  origin and direction (within a thousandth of a voxel, see :meth:`Geometry.describe_difference`);
* images hold finite values and are not empty (all zero) or constant;
* labels are whole numbers within the dataset's label set (offending values listed with their
  voxel counts); an all-background label is only a warning (lesion-free BHSD scans are normal);
* ACDC: each patient's 4D cine file reads, holds ``NbFrame`` frames and sits on the frames' grid;
* nnU-Net: ``dataset.json`` agrees with the files (``numTraining``, ``file_ending``).

The rules are loading's (:mod:`medsam_kit.data.adapters._loading`), so a dataset that passes
loads. Only ``severity == 'error'`` problems fail a check; warnings are notes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from medsam_kit.data.adapters._loading import (
    grid_difference,
    hdf5_key,
    missing_reason,
    single_channel,
    stored_geometry,
)
from medsam_kit.data.adapters.acdc import check_cine
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.data.integrity_content import ERROR, WARNING, image_findings, label_findings
from medsam_kit.io import Geometry, read_image_header, read_volume

__all__ = ["Problem", "KINDS", "ERROR", "WARNING", "check_dataset", "check_record", "check_nnunet_json"]

#: Every problem kind, with what it means (also shown by ``medsam-kit check --help``).
KINDS: dict[str, str] = {
    "discovery": "the folder does not have the dataset's layout (missing folder, file or modality)",
    "duplicate-case-id": "two cases share one id",
    "missing-file": "a file the layout lists does not exist (or is a broken symbolic link)",
    "missing-label": "a case the layout normally labels has no label file (used as unlabeled; warning)",
    "unreadable": "a file cannot be read completely (truncated, corrupt, not that format)",
    "channel-count": "a file holds several channels where the layout expects one",
    "shape-mismatch": "a channel or the label has a different grid shape than the case's image",
    "geometry-mismatch": "a channel or the label has a different spacing, origin or direction",
    "non-finite": "an image holds NaN or Inf values",
    "empty-image": "an image is all zero",
    "constant-image": "an image holds a single value",
    "label-dtype": "a label map is not stored as whole numbers (warning when float but whole-valued)",
    "label-values": "a label map holds values outside the dataset's label set",
    "empty-label": "a label map is all background (warning only)",
    "cine": "ACDC 4D cine file disagrees with Info.cfg (NbFrame, ED/ES) or the frames' grid",
    "dataset-json": "nnU-Net dataset.json is missing, invalid or disagrees with the files",
    "check-error": "the check itself failed on a case (reported instead of crashing)",
}

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


class _Grid(NamedTuple):
    """Spatial grid of one file: ``shape`` is ``(Z, Y, X)``; geometry None when the file stores none."""

    shape: tuple[int, ...]
    geometry: Geometry | None


def check_dataset(dataset: str | DatasetAdapter, root: str | Path,
                  progress: Callable[[int, int], None] | None = None) -> list[Problem]:
    """Check a raw dataset folder and return every problem found (an empty list when clean).

    Args:
        dataset: registry name ('acdc', 'bhsd', 'brats', 'brats2021', 'em', 'nnunet') or an
            adapter instance (``name``, ``spec(root)`` and ``discover(root, problems)``, see
            :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).
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
    found: list[DiscoveryProblem] = []
    records: list[CaseRecord] = []
    try:
        # Non-strict: bad cases come back in `found` and are left out; the others are checked.
        records = list(adapter.discover(root, problems=found))
    except Exception as exc:  # a bad folder must never crash the check
        problems.append(_discovery_problem(root, exc, adapter.name))
    problems += [_found_problem(root, item, adapter.name) for item in found]
    spec: DatasetSpec | None = None
    try:
        spec = adapter.spec(root)
    except Exception as exc:
        problem = _discovery_problem(root, exc, adapter.name)
        if all(p.message != problem.message for p in problems):  # often discover's reason again
            problems.append(problem)
    if adapter.name == "nnunet":
        problems = _merge_nnunet_json(root, problems, check_nnunet_json(root))
    problems += _duplicate_ids(records)
    if progress:
        progress(0, len(records))
    checked: set[Path] = set()
    for done, record in enumerate(records, 1):
        problems += check_record(record, spec, checked)
        if progress:
            progress(done, len(records))
    return problems


def check_record(record: CaseRecord, spec: DatasetSpec | None, checked: set[Path] | None = None) -> list[Problem]:
    """All per-case checks for one record (files, grids, image and label content).

    Reads one file at a time, each once: headers of all files first (cheap), then pixels.
    Any exception is reported as a problem of the file (or case) being checked.

    Args:
        record: the case.
        spec: the dataset's spec (label values), or None when it could not be built.
        checked: files shared between records (ACDC's cine file) that were already checked;
            updated in place, so a shared file is read and reported once.
    """
    try:
        return _check_record(record, spec, checked if checked is not None else set())
    except Exception as exc:  # a bug or an unforeseen file must not end the whole check
        return [Problem(None, record.case_id, "check-error", f"check failed: {type(exc).__name__}: {exc}",
                        "inspect this case by hand; please report the error if the files look fine")]


def _check_record(record: CaseRecord, spec: DatasetSpec | None, checked: set[Path]) -> list[Problem]:
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
            problems.append(Problem(path, case, "missing-file", f"{role} file of case {case} {missing_reason(path)}",
                                    "restore the file (or the link's target), or remove the case from the folder"))
    if label_file is None and record.meta.get("expected_label"):
        expected = Path(record.meta["expected_label"])
        problems.append(Problem(expected, case, "missing-label", f"no label file for case {case}; it will be "
                                "used as unlabeled", "restore the label file if this case should be labeled",
                                severity=WARNING))
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
            volume = read_volume(path, key=hdf5_key(path))
        except Exception as exc:
            problems.append(_unreadable(path, case, exc))
            grids.pop(path, None)
            continue
        grids.setdefault(path, _Grid(volume.spatial_shape, stored_geometry(volume)))
        try:
            array = single_channel(volume.array, path)  # the loader's rule: one channel per file
        except ValueError as exc:
            problems.append(Problem(path, case, "channel-count", _strip_file(str(exc), path),
                                    "store one channel per file (nnU-Net: CASE_0000, CASE_0001, ...)"
                                    if path != label_file else
                                    "store one integer label map (class values, not one-hot channels)"))
        else:
            if path == label_file:
                findings = label_findings(array, spec, record.binarize_label)
            else:
                findings = image_findings(array)
            problems += [Problem(path, case, *finding) for finding in findings]
        del volume  # one volume in memory at a time
    problems += _check_grids(case, [p for p in image_files if p in grids], label_file, grids)
    cine = record.meta.get("cine_file")
    if cine is not None and Path(cine) not in checked:
        checked.add(Path(cine))
        problems += _check_cine(record, Path(cine), grids.get(image_files[0]))
    return problems


def _check_cine(record: CaseRecord, cine: Path, frame: _Grid | None) -> list[Problem]:
    """ACDC: the patient's 4D cine reads completely and agrees with Info.cfg and the frames' grid."""
    if not cine.exists():
        return [Problem(cine, record.case_id, "missing-file", f"cine file {missing_reason(cine)}",
                        "restore the link's target, or remove the link")]
    try:
        volume = read_volume(cine)
    except Exception as exc:
        return [_unreadable(cine, record.case_id, exc)]
    if frame is None:  # the frame file itself is missing or unreadable (reported already)
        return []
    try:
        check_cine(record, volume.array.shape, stored_geometry(volume), frame.shape, frame.geometry)
    except ValueError as exc:
        return [Problem(cine, record.case_id, "cine", _strip_file(str(exc), cine),
                        "re-export the 4D file from the series the frames come from, or fix Info.cfg")]
    return []


# ----------------------------------------------------------------------------- grids
def _check_grids(case: str, images: list[Path], label: Path | None,
                 grids: dict[Path, _Grid]) -> list[Problem]:
    """Every channel file and the label must sit on the grid most channel files agree on.

    Same rule as loading (:func:`~medsam_kit.data.adapters._loading.grid_difference`); geometry
    is compared only where both files store one, with a tolerance of a fraction of a voxel.
    """
    if not images:
        return []

    def difference(a: _Grid, b: _Grid) -> tuple[str, str] | None:
        return grid_difference(a.shape, a.geometry, b.shape, b.geometry)

    # Reference = the channel file most others agree with, so the odd one out gets the blame.
    reference = max(images, key=lambda p: sum(difference(grids[p], grids[q]) is None for q in images))
    ref = grids[reference]
    problems = []
    others = [p for p in images if p != reference] + ([label] if label in grids else [])
    for path in others:
        role = "label" if path == label else "image"
        grid = grids[path]
        found = difference(grid, ref)
        if found is None:
            continue
        if found[0] == "shape":
            fix = ("resample the label with nearest-neighbour interpolation onto the image grid"
                   if role == "label" else "resample or crop it onto the grid of the other channels")
            message = f"{role} grid (Z, Y, X) {grid.shape} differs from {reference.name} {ref.shape}"
            problems.append(Problem(path, case, "shape-mismatch", message, fix))
        else:
            fix = (f"if only the header is wrong, copy the geometry of {reference.name} into it; otherwise "
                   "resample it onto that grid (channels and label must be co-registered)")
            problems.append(Problem(path, case, "geometry-mismatch",
                                    f"{role} geometry differs from {reference.name}: {found[1]}", fix))
    return problems


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


def check_nnunet_json(root: Path) -> list[Problem]:
    """What the nnU-Net adapter accepts but nnU-Net needs: ``numTraining`` / ``file_ending`` keys,
    and files whose ending differs from ``file_ending`` (nnU-Net ignores them).

    A missing or invalid ``dataset.json``, bad ``channel_names`` / ``labels`` and a ``numTraining``
    that disagrees with ``imagesTr`` are the adapter's (strict or non-strict discovery) findings.
    """
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []  # the adapter reports a missing or invalid file
    if not isinstance(meta, dict):
        return []
    missing = [k for k in ("numTraining", "file_ending") if k not in meta]
    if missing:
        return [Problem(path, None, "dataset-json", f"dataset.json lacks {', '.join(missing)}",
                        "write dataset.json as nnU-Net v2 does: channel_names, labels, numTraining, "
                        "file_ending")]
    ending, problems = str(meta["file_ending"]), []
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        if not (root / folder).is_dir():
            continue
        for file in sorted((root / folder).iterdir()):
            if not file.name.startswith(".") and not file.name.endswith(ending):
                problems.append(Problem(file, None, "dataset-json",
                                        f"file ending differs from dataset.json file_ending {ending!r} "
                                        "(nnU-Net ignores this file)",
                                        f"convert it to {ending}, or remove it (or fix file_ending)",
                                        severity=WARNING))
    return problems


def _merge_nnunet_json(root: Path, adapter_problems: list[Problem],
                      json_problems: list[Problem]) -> list[Problem]:
    """Adapter problems about dataset.json become dataset-json problems; only exact repeats are dropped."""
    path = root / "dataset.json"
    seen = {p.message for p in json_problems}
    merged = []
    for problem in adapter_problems:
        if problem.file == path:
            if problem.message in seen:
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


def _exception_text(exc: Exception) -> str:
    """The message of ``exc`` (KeyError's without repr quotes), prefixed by its type when unforeseen."""
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc) or type(exc).__name__
    return text if isinstance(exc, ValueError | OSError | KeyError) else f"{type(exc).__name__}: {text}"


def _unreadable(path: Path, case: str, exc: Exception) -> Problem:
    text = _exception_text(exc)
    # The reader's text says what is wrong (truncated, corrupt, wrong format); the fix does not repeat it.
    return Problem(path, case, "unreadable", f"cannot read: {_strip_file(text, path)}",
                   "replace it with a complete, readable copy, or remove the case")


def _strip_file(text: str, file: Path) -> str:
    """``text`` without a leading 'FILE: ' (or 'FOLDER: ' of a folder holding it): the problem names the file.

    'FILE:12: ...' (a line number, e.g. Info.cfg) becomes 'line 12: ...'.
    """
    head, sep, rest = text.partition(": ")
    if not sep:
        return text
    if Path(head) == file or Path(head) in file.parents:
        return rest
    name, _, line = head.rpartition(":")
    return f"line {line}: {rest}" if line.isdigit() and Path(name) == file else text


def _found_problem(root: Path, found: DiscoveryProblem, name: str) -> Problem:
    """A bad case that non-strict discovery left out."""
    file = Path(found.file) if found.file is not None else root
    return Problem(file, found.case_id, "discovery", _strip_file(found.message, file),
                   f"fix or remove the case (raw {name or 'dataset'} layout: see data_prep/); "
                   f"loading and training stop here")


def _discovery_problem(root: Path, exc: Exception, name: str) -> Problem:
    """Turn an adapter's exception into a problem, naming the file its message starts with."""
    text, file = _exception_text(exc), root
    head, sep, rest = text.partition(": ")
    if sep and head.startswith(str(root)):
        file, text = Path(head), rest
    elif named := re.search(re.escape(str(root)) + r"[^\s;,)'\"]*", text):  # "... (expected ROOT/x.nii.gz)"
        file = Path(named.group(0).rstrip(":."))
    return Problem(file, None, "discovery", text,
                   f"arrange the folder in the raw {name or 'dataset'} layout (see data_prep/) and rerun")
