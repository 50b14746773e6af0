"""Score a folder of predicted label maps against ground truth, per case and per class.

Pairing is by case id. Predictions are files ``<case_id><suffix>`` in one folder (any volume
suffix of :mod:`medsam_kit.io`); a ``/`` in a case id (EM ``lucchi/testing``) is ``__`` in the
file name (:func:`medsam_kit.data.case.case_file_stem`). The ground truth is either

(a) a raw dataset root that the dataset's adapter recognises (ACDC, BHSD, BraTS, EM,
    nnU-Net raw): labels are read through the adapter, so they get the adapter's value
    mapping (EM 255 → 1, instance ids binarised) and the same geometry as the images that
    the predictions were made from; or
(b) a flat folder of label files ``<case_id><suffix>`` (volume files directly in it). A trailing
    ``_gt``, ``_seg``, ``-seg`` or ``_groundtruth`` is removed from the stem, so ACDC's
    ``patient001_frame01_gt.nii.gz`` pairs with the prediction ``patient001_frame01.nii.gz``. For
    ``nnunet`` the labels come from ``dataset.json`` in that folder or its parent (``labelsTr/``).
    Values are used as stored (a Lucchi mask holds 255, not 1: score EM through its raw root instead).

Which one: the adapter's ``discover`` is tried first; a folder where it finds labeled cases is
(a). Otherwise a folder holding volume files directly is (b). A folder with neither is an error:
when it has sub-folders (every raw layout without volumes in its root keeps them in sub-folders)
it was meant as a raw root, so the adapter's own message is raised (e.g. a patient folder
without ``Info.cfg``), not a vague "no ground truth"; an empty folder gets the generic message.

Label files (predictions and flat ground truth) must hold one ``(Z, Y, X)`` map of integer
values 0..255 (:func:`medsam_kit.data.adapters._loading.to_label`, the adapters' own rule).

Nothing is skipped silently and nothing is resampled:

* a ground-truth case without a prediction is **missing**, a prediction file that does not
  read as a label map is **unreadable**, a ground-truth file that does not read is
  **unreadable_gt**, and a prediction whose shape or geometry differs from its ground truth
  (``Geometry.almost_equal``: within a thousandth of a voxel) is **mismatched**. These cases
  stay in ``metrics.csv`` and in the summary as failures — Dice 0, IoU 0, NSD 0, HD95/ASSD NaN
  (their ``status`` column says why) — so an incomplete set can never look better than a
  complete one;
* a prediction without ground truth is **unmatched** (listed, not scored);
* label values outside the dataset's set are listed per case (they belong to no class,
  which usually means the wrong ``dataset`` was given, e.g. BraTS 2021 ET=4 as ``brats``).

Summary statistics (:mod:`medsam_kit.engine.evaluation_report`) skip NaN values and report how
many there were (``n_nan``): per class across cases, and overall across classes and pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.adapters._loading import to_label, volume_files
from medsam_kit.data.case import case_file_stem
from medsam_kit.data.datasets import SPECS, DatasetSpec
from medsam_kit.engine.evaluation_report import CSV_COLUMNS, OUTPUT_FILES, summarize, write_outputs
from medsam_kit.engine.metrics import class_metrics
from medsam_kit.io import VOLUME_SUFFIXES, Geometry, read_volume

__all__ = ["CSV_COLUMNS", "GT_STEM_SUFFIXES", "EvaluationResult", "default_nsd_tolerance_mm", "evaluate_folders"]

#: Stem endings removed from flat ground-truth file names (ACDC ``_gt``, BraTS-style ``_seg``/``-seg``,
#: Lucchi ``_groundtruth``).
GT_STEM_SUFFIXES = ("_groundtruth", "_gt", "_seg", "-seg")
_FAILED = {"dice": 0.0, "iou": 0.0, "hd95_mm": math.nan, "assd_mm": math.nan, "nsd": 0.0}
# What reading a label file can raise: read_volume turns library errors into ValueError, but
# adapters open some formats themselves (h5py: OSError), a file can vanish or lose permissions
# (OSError), and an HDF5 key can be absent (KeyError).
_READ_ERRORS = (ValueError, OSError, KeyError)


def default_nsd_tolerance_mm(spec: DatasetSpec) -> float:
    """2 mm for clinical images; 10 nm (2 voxels of 5 nm) for electron microscopy."""
    return 1e-5 if spec.modality == "EM" else 2.0


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folders` found and computed.

    Attributes:
        dataset: dataset name as given.
        classes: scored classes ``{name: label values}``.
        nsd_tolerance_mm: NSD tolerance used.
        rows: one dict per ground-truth case × class with the keys of :data:`CSV_COLUMNS`.
        summary: the content of ``summary.json`` (NaN written as null there): dataset,
            tolerance, case counts, per class ``{metric: {mean, std, median, n, n_nan}}``,
            ``overall`` (``across_classes`` and ``pooled``, see
            :mod:`medsam_kit.engine.evaluation_report`) and the failure / invalid-label lists.
        missing: ground-truth case ids without a prediction.
        unmatched: prediction case ids without ground truth.
        mismatched: ``{case_id: message}`` for shape/geometry mismatches.
        unreadable: ``{case_id: message}`` for prediction files that are not label maps.
        unreadable_gt: ``{case_id: message}`` for ground-truth files that could not be read.
        invalid_labels: ``{case_id: message}`` for label values outside the dataset's set.
        files: written outputs ``{"csv" | "summary" | "plot": path}`` (empty without ``out_dir``).
    """

    dataset: str
    classes: dict[str, tuple[int, ...]]
    nsd_tolerance_mm: float
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    unreadable_gt: dict[str, str] = field(default_factory=dict)
    invalid_labels: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed_cases(self) -> set[str]:
        """Ground-truth case ids scored as failures (missing, mismatched, unreadable either side)."""
        return {*self.missing, *self.mismatched, *self.unreadable, *self.unreadable_gt}

    @property
    def complete(self) -> bool:
        """True when every ground-truth case was scored with valid labels."""
        return not (self.failed_cases or self.invalid_labels)


@dataclass
class _GroundTruth:
    case_id: str
    path: Path
    load: Callable[[], tuple[np.ndarray, Geometry]]


def _message(exc: BaseException, path: Path) -> str:
    """One line naming ``path`` (KeyError's str() adds quotes; library errors may omit the file)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if str(path) in text else f"{path}: {text}"


def _flat_files(folder: Path, strip: tuple[str, ...], exclude: Collection[str] = ()) -> dict[str, Path]:
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


def _read_label_map(path: Path) -> tuple[np.ndarray, Geometry]:
    """A label file as ``(Z, Y, X)`` uint8 and its geometry; ValueError naming the file otherwise."""
    volume = read_volume(path)
    array = volume.array
    if array.ndim == 4:  # Volume guarantees (Z, Y, X) or (C, Z, Y, X)
        if array.shape[0] != 1:
            raise ValueError(f"{path}: expected one (Z, Y, X) label map, found {array.shape[0]} channels "
                             f"(shape {array.shape}); write one integer label map per case")
        array = array[0]
    return to_label(array, path), volume.geometry


def _unusable_root(gt_dir: Path, dataset: str, error: Exception) -> Exception:
    kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
    return kind(f"{gt_dir}: cannot read it as a raw {dataset} dataset root: {_message(error, gt_dir)}")


def _ground_truth(gt_dir: Path, dataset: str,
                  subset: str | None) -> tuple[DatasetSpec, dict[str, _GroundTruth]]:
    """Spec and ground-truth cases of a raw dataset root (a) or a flat label folder (b)."""
    adapter = get_adapter(dataset)
    try:
        records, layout_error = adapter.discover(gt_dir), None
    except (FileNotFoundError, ValueError) as exc:  # not this layout, or this layout with a defect
        records, layout_error = [], exc
    labeled = [r for r in records if r.labeled]
    if labeled:
        chosen = [r for r in labeled if subset in (None, r.subset)]
        if not chosen:
            raise ValueError(f"{gt_dir}: no labeled cases in subset {subset!r}; subsets with labels: "
                             f"{sorted({r.subset for r in labeled})}")
        # The adapter knows each layout's label encoding and geometry (the grid predictions are on).
        cases = {r.case_id: _GroundTruth(r.case_id, Path(r.label_file), r.load_label) for r in chosen}
        return adapter.spec(gt_dir), cases

    try:
        files = _flat_files(gt_dir, GT_STEM_SUFFIXES)
    except ValueError as flat_error:
        if layout_error is None:
            raise
        # Neither reading works; both reasons in one line, since either may be what the user meant.
        raise ValueError(f"{flat_error}; read as a raw {dataset} root instead: "
                         f"{_message(layout_error, gt_dir)}") from flat_error
    if not files:
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
    return spec, {cid: _GroundTruth(cid, p, lambda p=p: _read_label_map(p)) for cid, p in files.items()}


def _failure_rows(case_id: str, classes: dict, status: str, gt: np.ndarray | None) -> list[dict]:
    rows = []
    for name, values in classes.items():
        gt_voxels = int(np.count_nonzero(np.isin(gt, values))) if gt is not None else None
        rows.append({"case_id": case_id, "class": name, **_FAILED, "gt_voxels": gt_voxels,
                     "pred_voxels": None, "status": status})
    return rows


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                     out_dir: str | Path | None = None, nsd_tolerance_mm: float | None = None,
                     subset: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Score every ground-truth case (see the module docstring for pairing and failures).

    Args:
        pred_dir: folder of predicted label maps ``<case_id><suffix>``, each on its ground
            truth's grid (same ``(Z, Y, X)`` shape and geometry).
        gt_dir: raw dataset root or flat folder of label files.
        dataset: a name in :data:`medsam_kit.data.datasets.SPECS` or ``'nnunet'``.
        out_dir: where to write ``metrics.csv``, ``summary.json`` and ``metrics.png``
            (atomically); None writes nothing.
        nsd_tolerance_mm: NSD tolerance in mm (finite, >= 0); None for :func:`default_nsd_tolerance_mm`.
        subset: with a raw root, score only cases of this subset (e.g. ACDC ``'testing'``).
        progress: optional ``progress(done, total)`` called after each ground-truth case.

    Returns:
        :class:`EvaluationResult`. Unreadable files on either side are failures in it, not errors.

    Raises:
        ValueError: unknown dataset, bad tolerance, clashing case ids, a raw root the adapter rejects,
            no foreground class to score.
        FileNotFoundError: a folder does not exist or holds no ground truth.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if dataset not in SPECS and dataset != "nnunet":
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join([*SPECS, 'nnunet'])}")
    if nsd_tolerance_mm is not None and not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, got {nsd_tolerance_mm}")
    for name, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: {name} folder does not exist")
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder}: is a file; the {name} path must be a folder")
    spec, gts = _ground_truth(gt_dir, dataset, subset)
    tolerance = default_nsd_tolerance_mm(spec) if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    same_folder = out_dir is not None and Path(out_dir).resolve() == pred_dir.resolve()
    preds = _flat_files(pred_dir, (), exclude=set(OUTPUT_FILES) if same_folder else set())
    classes = {name: tuple(values) for name, values in spec.evaluation_classes().items()}
    if not classes:
        raise ValueError(f"{gt_dir}: the {spec.name} labels {dict(spec.label_names)} define no foreground "
                         "class to score; add the classes (nnU-Net: 'labels' in dataset.json)")
    allowed = set(spec.label_values) | ({spec.ignore_label} if spec.ignore_label is not None else set())
    stems = {case_file_stem(case_id): case_id for case_id in gts}
    result = EvaluationResult(dataset, classes, tolerance, unmatched=sorted(set(preds) - set(stems)))

    case_ids = sorted(gts)
    for done, case_id in enumerate(case_ids, start=1):
        pred_path = preds.get(case_file_stem(case_id))
        result.rows.extend(_score_case(gts[case_id], pred_path, spec, classes, allowed, tolerance, result))
        if progress is not None:
            progress(done, len(case_ids))

    result.summary = summarize(result, len(case_ids), pred_dir=pred_dir, gt_dir=gt_dir)
    if out_dir is not None:
        result.files = write_outputs(result, Path(out_dir))
    return result


def _score_case(gt_case: _GroundTruth, pred_path: Path | None, spec: DatasetSpec, classes: dict,
                allowed: set[int], tolerance: float, result: EvaluationResult) -> list[dict]:
    """Rows of one case; records missing / unreadable / mismatched / invalid labels in ``result``."""
    case_id = gt_case.case_id
    if pred_path is None:
        result.missing.append(case_id)
    # The ground truth is read even without a prediction: its problems are reported either way
    # and a missing case's rows still say how many ground-truth voxels it has.
    try:
        gt, gt_geometry = gt_case.load()
    except _READ_ERRORS as exc:
        result.unreadable_gt[case_id] = _message(exc, gt_case.path)
        return _failure_rows(case_id, classes, "unreadable_gt", None)
    if pred_path is None:
        return _failure_rows(case_id, classes, "missing", gt)
    try:
        pred, pred_geometry = _read_label_map(pred_path)
    except _READ_ERRORS as exc:
        result.unreadable[case_id] = _message(exc, pred_path)
        return _failure_rows(case_id, classes, "unreadable", gt)
    if pred.shape != gt.shape:
        result.mismatched[case_id] = (f"{pred_path}: shape {pred.shape} differs from ground truth "
                                      f"{gt_case.path} {gt.shape}; write predictions on the ground truth's "
                                      "grid")
        return _failure_rows(case_id, classes, "mismatch", gt)
    if not pred_geometry.almost_equal(gt_geometry):
        difference = pred_geometry.describe_difference(gt_geometry)
        result.mismatched[case_id] = (f"{pred_path}: geometry differs from ground truth {gt_case.path}: "
                                      f"{difference}; predictions are never resampled, write them on the "
                                      "ground truth's grid")
        return _failure_rows(case_id, classes, "mismatch", gt)
    outside = {path: sorted(set(np.unique(labels).tolist()) - allowed)
               for path, labels in ((pred_path, pred), (gt_case.path, gt))}
    if any(outside.values()):
        found = "; ".join(f"{path} has {values}" for path, values in outside.items() if values)
        result.invalid_labels[case_id] = (f"label values outside the {spec.name} set {sorted(allowed)}: "
                                          f"{found} (wrong dataset?)")
    scores = class_metrics(pred, gt, classes, gt_geometry.spacing_zyx, tolerance,
                           ignore_label=spec.ignore_label)
    return [{"case_id": case_id, "class": name, **values, "status": "ok"} for name, values in scores.items()]
