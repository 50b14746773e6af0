"""The inputs of an evaluation: ground-truth cases (raw root or flat folder) and label-map files.

:func:`find_ground_truth` decides how a ground-truth folder is read (the rules are in
:mod:`medsam_kit.engine.evaluation`); :func:`read_label_map` reads one prediction or flat
ground-truth file; :class:`BratsNamingGuard` stops a flat BraTS evaluation scored with the
other BraTS label numbering.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.adapters._loading import to_label, volume_files
from medsam_kit.data.adapters.base import CaseRecord, DiscoveryProblem
from medsam_kit.data.datasets import SPECS, DatasetSpec
from medsam_kit.io import VOLUME_SUFFIXES, Geometry, read_volume

#: Stem endings removed from flat ground-truth file names (ACDC ``_gt``, BraTS-style ``_seg``/``-seg``,
#: Lucchi ``_groundtruth``).
GT_STEM_SUFFIXES = ("_groundtruth", "_gt", "_seg", "-seg")


@dataclass
class GroundTruth:
    """One ground-truth case.

    Attributes:
        case_id: the case id (predictions are paired by it).
        path: the label file (or, for a case the dataset reader dropped, the file at fault).
        load: reads ``(label (Z, Y, X) uint8, geometry)``; the geometry is None when the file
            stores none (plain TIFF/PNG/HDF5 in a flat folder). Raises ValueError/OSError/KeyError.
        binarize: the dataset binarises this label (EM 0/255 masks, instance ids), so its
            prediction is binarised too (> 0 becomes 1).
    """

    case_id: str
    path: Path
    load: Callable[[], tuple[np.ndarray, Geometry | None]]
    binarize: bool = False


@dataclass
class GroundTruthSet:
    """What :func:`find_ground_truth` found.

    Attributes:
        spec: the dataset's spec (labels, regions).
        cases: ``{case_id: GroundTruth}``, cases the dataset reader dropped included (their
            ``load`` raises the reader's message, so they are scored as unreadable ground truth).
        flat: True for a flat folder of label files, False for a raw dataset root.
        notes: discovery problems that belong to no case of the evaluation (e.g. nnU-Net
            ``numTraining`` disagreeing, or a problem outside the chosen subset), one line each.
    """

    spec: DatasetSpec
    cases: dict[str, GroundTruth]
    flat: bool
    notes: list[str] = field(default_factory=list)


def message(exc: BaseException, path: Path) -> str:
    """One line naming ``path`` (KeyError's str() adds quotes; library errors may omit the file)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if str(path) in text else f"{path}: {text}"


def flat_files(folder: Path, strip: tuple[str, ...], exclude: Collection[str] = ()) -> dict[str, Path]:
    """``{case_id: file}`` for the volume files directly in ``folder``, ``strip`` endings removed.

    Hidden files are skipped and two files of one stem raise (:func:`volume_files`); names in
    ``exclude`` (lower case) are left out.
    """
    found: dict[str, Path] = {}
    for stem, path in volume_files(folder, VOLUME_SUFFIXES).items():
        if path.name.lower() in exclude:
            continue
        case_id = next((stem[: -len(s)] for s in strip if stem.endswith(s) and len(stem) > len(s)), stem)
        if case_id in found:
            raise ValueError(f"{folder}: {found[case_id].name} and {path.name} both give case id "
                             f"{case_id!r}; keep one file per case")
        found[case_id] = path
    return found


def read_label_map(path: Path, binarize: bool = False) -> tuple[np.ndarray, Geometry | None]:
    """A label file as ``(Z, Y, X)`` uint8 and its stored geometry (None when the file has none).

    Args:
        path: volume file (any :mod:`medsam_kit.io` format).
        binarize: map values > 0 to 1 (EM masks 0/255 and instance ids), the adapters' rule.

    Raises:
        ValueError: not one integer label map (naming the file).
    """
    volume = read_volume(path)
    array = volume.array
    if array.ndim == 4:  # Volume guarantees (Z, Y, X) or (C, Z, Y, X)
        if array.shape[0] != 1:
            raise ValueError(f"{path}: expected one (Z, Y, X) label map, found {array.shape[0]} channels "
                             f"(shape {array.shape}); write one integer label map per case")
        array = array[0]
    # A plain TIFF/PNG/HDF5 file holds no geometry: the reader's identity grid is no statement
    # about the data, so the caller compares shapes only (the adapters' grid rule).
    geometry = volume.geometry if volume.meta.get("stored_geometry", True) else None
    return to_label(array, path, binarize=binarize), geometry


def _raise_problems(problems: list[DiscoveryProblem]) -> tuple[np.ndarray, Geometry | None]:
    raise ValueError("; ".join(p.message for p in problems) + " (the dataset reader left this case out)")


def _in_subset(problem: DiscoveryProblem, subset: str) -> bool:
    """Whether a dropped case lies in ``subset``: a folder of that name (ACDC ``testing/``) or the
    case name itself (EM ``lucchi/testing``); a problem that cannot be placed is not in it."""
    parts = Path(problem.file).parts if problem.file is not None else ()
    return subset in parts[:-1] or problem.case_id.split("/")[-1] == subset


def _from_records(gt_dir: Path, records: list[CaseRecord], problems: list[DiscoveryProblem],
                  subset: str | None) -> tuple[dict[str, GroundTruth], list[str]]:
    labeled = [r for r in records if r.labeled]
    chosen = [r for r in labeled if subset in (None, r.subset)]
    if not chosen:
        raise ValueError(f"{gt_dir}: no labeled cases in subset {subset!r}; subsets with labels: "
                         f"{sorted({r.subset for r in labeled})}")
    cases: dict[str, GroundTruth] = {}
    for record in chosen:
        if record.case_id in cases:  # non-strict discovery keeps both; pairing would be a guess
            raise ValueError(f"{gt_dir}: case id {record.case_id!r} is used by both {cases[record.case_id].path} "
                             f"and {record.label_file}; case ids must be unique: rename or remove one")
        # The adapter knows each layout's label encoding and geometry (the grid predictions are on).
        cases[record.case_id] = GroundTruth(record.case_id, Path(record.label_file), record.load_label,
                                            record.binarize_label)
    # Cases the reader dropped (a missing image, a broken Info.cfg) are failures of the
    # evaluation, never silently absent: their rows say unreadable_gt with the reader's message.
    known = {r.case_id for r in records}
    dropped: dict[str, list[DiscoveryProblem]] = {}
    notes = []
    for problem in problems:
        case_id = problem.case_id
        if case_id is None or case_id in known or (subset is not None and not _in_subset(problem, subset)):
            notes.append(problem.message)
        else:
            dropped.setdefault(case_id, []).append(problem)
    for case_id, found in dropped.items():
        path = Path(found[0].file) if found[0].file is not None else gt_dir
        cases[case_id] = GroundTruth(case_id, path, lambda found=found: _raise_problems(found))
    return cases, notes


def _unusable_root(gt_dir: Path, dataset: str, error: Exception | DiscoveryProblem,
                   more: int = 0) -> Exception:
    if isinstance(error, DiscoveryProblem):
        kind, text = ValueError, error.message
    else:
        kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        text = message(error, gt_dir)
    extra = f" (and {more} more problem(s); run medsam-kit check {dataset} {gt_dir})" if more else ""
    return kind(f"{gt_dir}: cannot read it as a raw {dataset} dataset root: {text}{extra}")


def find_ground_truth(gt_dir: Path, dataset: str, subset: str | None) -> GroundTruthSet:
    """Spec and ground-truth cases of a raw dataset root (a) or a flat label folder (b).

    Raises:
        ValueError / FileNotFoundError: see :func:`medsam_kit.engine.evaluation.evaluate_folders`.
    """
    adapter = get_adapter(dataset)
    problems: list[DiscoveryProblem] = []
    try:
        # Non-strict: one broken case (a missing image: evaluation needs only labels) must not
        # stop the others being scored. Errors about the folder as a whole still raise here.
        records, layout_error = adapter.discover(gt_dir, problems=problems), None
    except (FileNotFoundError, ValueError) as exc:  # not this layout
        records, layout_error, problems = [], exc, []
    if any(r.labeled for r in records):
        cases, notes = _from_records(gt_dir, records, problems, subset)
        return GroundTruthSet(adapter.spec(gt_dir), cases, flat=False, notes=notes)

    layout_reason: Exception | DiscoveryProblem | None = layout_error or (problems[0] if problems else None)
    try:
        files = flat_files(gt_dir, GT_STEM_SUFFIXES)
    except ValueError as flat_error:
        if layout_reason is None:
            raise
        # Neither reading works; both reasons in one line, since either may be what the user meant.
        reason = layout_reason.message if isinstance(layout_reason, DiscoveryProblem) else message(
            layout_reason, gt_dir)
        raise ValueError(f"{flat_error}; read as a raw {dataset} root instead: {reason}") from flat_error
    if not files:
        if problems:  # the layout is recognised but no labeled case survived: show why
            raise _unusable_root(gt_dir, dataset, problems[0], more=len(problems) - 1)
        if records:
            raise FileNotFoundError(f"{gt_dir}: the raw {dataset} root holds {len(records)} case(s) but none "
                                    "has a ground-truth label file; point --gt at labeled data")
        has_folders = any(p.is_dir() and not p.name.startswith(".") for p in gt_dir.iterdir())
        if layout_error is not None and has_folders:
            raise _unusable_root(gt_dir, dataset, layout_error) from layout_error
        raise FileNotFoundError(f"{gt_dir}: found no ground truth: expected a raw {dataset} dataset root or "
                                "a folder of label files <case_id>.nii.gz (or another volume suffix)")
    if subset is not None:
        raise ValueError(f"{gt_dir}: a subset ({subset!r}) can only be chosen in a raw {dataset} dataset "
                         "root, and this folder is a flat folder of label files")
    if dataset == "nnunet":
        root = next((d for d in (gt_dir, gt_dir.parent) if (d / "dataset.json").is_file()), None)
        if root is None:
            raise FileNotFoundError(f"{gt_dir}: nnunet evaluation needs dataset.json in this folder or its "
                                    "parent (point --gt at the nnU-Net raw dataset root or its labelsTr/)")
        spec = adapter.spec(root)
    else:
        spec = SPECS[dataset]
    # EM labels are semantic (the EM adapter binarises every mask: Lucchi 255, MitoEM instance
    # ids), so a flat folder of Lucchi *_groundtruth.tif masks scores as mitochondria = 1.
    binarize = spec.modality == "EM"
    cases = {cid: GroundTruth(cid, p, lambda p=p: read_label_map(p, binarize), binarize)
             for cid, p in files.items()}
    return GroundTruthSet(spec, cases, flat=True)


class BratsNamingGuard:
    """Stop a flat BraTS evaluation whose ground truth uses the other ET label.

    BraTS 2023+ (``brats``) marks ET with 3, BraTS 2021 (``brats2021``) with 4. With the wrong
    name ET (and TC's enhancing part) is scored on two empty masks, a "perfect" Dice 1.0, so
    the first ground truth (in case-id order) holding the other ET label, before any held this
    dataset's ET label, raises ``ValueError`` telling which dataset name to use.
    """

    _ET = {"brats": 3, "brats2021": 4}

    def __init__(self, dataset: str) -> None:
        other = "brats2021" if dataset == "brats" else "brats"
        self.dataset, self.other = dataset, other
        self.own_et, self.other_et = self._ET[dataset], self._ET[other]
        self.seen_own = False

    def __call__(self, gt: np.ndarray, path: Path) -> None:
        """Check one ground truth ``(Z, Y, X)`` read from ``path``."""
        if self.seen_own:
            return
        if np.any(gt == self.own_et):
            self.seen_own = True
        elif np.any(gt == self.other_et):
            naming = "2021 (ET = 4)" if self.other == "brats2021" else "2023+ (ET = 3)"
            raise ValueError(f"{path}: holds label {self.other_et} and no ground truth before it holds "
                             f"label {self.own_et}: this is BraTS {naming} labelling, and --dataset "
                             f"{self.dataset} would score ET on empty masks; use --dataset {self.other}")

    @classmethod
    def for_dataset(cls, dataset: str, flat: bool) -> BratsNamingGuard | None:
        """A guard for flat BraTS folders (a raw root's naming is detected from its file names)."""
        return cls(dataset) if flat and dataset in cls._ET else None
