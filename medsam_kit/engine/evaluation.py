"""Score a folder of predicted label maps against ground truth, per case and per class.

Pairing is by case id. Predictions are files ``<case_id><suffix>`` in one folder (any volume
suffix of :mod:`medsam_kit.io`); a ``/`` in a case id (EM ``lucchi/testing``) is ``__`` in the
file name (:func:`medsam_kit.data.case.case_file_stem`). The ground truth is either

(a) a raw dataset root that the dataset's adapter recognises (ACDC, BHSD, BraTS, EM,
    nnU-Net raw): labels are read through the adapter, so they get the adapter's value
    mapping (EM 255 → 1, instance ids binarised) and the same geometry as the images that
    the predictions were made from. Discovery is non-strict: a case the adapter cannot use
    (a missing image or modality, a broken ``Info.cfg``) does not stop the others; it is
    listed as unreadable ground truth with the adapter's message (ACDC names such a case by
    its patient when ``Info.cfg`` is unreadable, since the frame ids come from it); or
(b) a flat folder of label files ``<case_id><suffix>`` (volume files directly in it). A trailing
    ``_gt``, ``_seg``, ``-seg`` or ``_groundtruth`` is removed from the stem, so ACDC's
    ``patient001_frame01_gt.nii.gz`` pairs with the prediction ``patient001_frame01.nii.gz``. For
    ``nnunet`` the labels come from ``dataset.json`` in that folder or its parent (``labelsTr/``).
    Values are used as stored, except for ``em``, whose masks are binarised as the EM adapter
    does (Lucchi 0/255 → 0/1). For ``brats``/``brats2021`` a ground truth holding the other
    naming's ET label (4 for ``brats``, 3 for ``brats2021``) before any holds its own is an
    error telling which name to use: ET would otherwise be scored on two empty masks (Dice 1).

Which one: the adapter's ``discover`` is tried first; a folder where it finds labeled cases is
(a). Otherwise a folder holding volume files directly is (b). A folder with neither is an error:
when the adapter recognised the layout but every case was unusable, or when the folder has
sub-folders (every raw layout without volumes in its root keeps them in sub-folders), the
adapter's own message is raised (e.g. a patient folder without ``Info.cfg``), not a vague "no
ground truth"; an empty folder gets the generic message.

Label files (predictions and flat ground truth) must hold one ``(Z, Y, X)`` map of integer
values 0..255 (:func:`medsam_kit.data.adapters._loading.to_label`, the adapters' own rule).
Where the ground truth is binarised (EM), the prediction is binarised too (> 0 → 1), so a
0/255 or instance-id prediction scores as mitochondria.

Nothing is skipped silently and nothing is resampled:

* a ground-truth case without a prediction is **missing**, a prediction file that does not
  read as a label map is **unreadable**, a ground-truth case that cannot be read (or that the
  adapter left out) is **unreadable_gt**, and a prediction on another grid than its ground
  truth is **mismatched**. Grids are compared as the adapters compare a case's files
  (:func:`medsam_kit.data.adapters._loading.grid_difference`): shape always, geometry
  (``Geometry.almost_equal``: within a thousandth of a voxel) only where the prediction file
  stores one — a plain TIFF/PNG/HDF5 prediction (Lucchi-style ``.tif``) has none and is
  scored on the ground truth's geometry. These cases stay in ``metrics.csv`` and in the
  summary as failures — Dice 0, IoU 0, NSD 0, HD95/ASSD NaN (their ``status`` column says why);
* a prediction without ground truth is **unmatched** (listed, not scored);
* label values outside the dataset's set are listed per case (they belong to no class,
  which usually means the wrong ``dataset`` was given);
* discovery problems that belong to no scored case (nnU-Net ``numTraining`` disagreeing, a
  broken case outside ``subset``) are listed as ``notes``.

Undefined distances (HD95/ASSD of failures and of one-sided empty masks) are NaN per case in
``metrics.csv``; ``summary.json`` counts each as the worst case, the ground truth's image
diagonal in mm (``max_distance_mm`` column, :func:`medsam_kit.engine.metrics.image_diagonal_mm`),
as BraTS scoring does, and reports how many there were (``n_nan``). With Dice 0 for failures,
deleting or breaking a prediction can never improve a mean. When the dataset defines regions
(BraTS WT/TC/ET), the ``overall`` statistics run over the regions only: the labels they are
built from would count the same voxels twice (per-label rows stay in ``metrics.csv`` and
``classes``). See :mod:`medsam_kit.engine.evaluation_report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.adapters._loading import grid_difference
from medsam_kit.data.case import case_file_stem
from medsam_kit.data.datasets import SPECS, DatasetSpec
from medsam_kit.engine.evaluation_inputs import (
    GT_STEM_SUFFIXES,
    BratsNamingGuard,
    GroundTruth,
    find_ground_truth,
    flat_files,
    message,
    read_label_map,
)
from medsam_kit.engine.evaluation_report import CSV_COLUMNS, OUTPUT_FILES, summarize, write_outputs
from medsam_kit.engine.metrics import class_metrics, image_diagonal_mm
from medsam_kit.io import Geometry

__all__ = ["CSV_COLUMNS", "GT_STEM_SUFFIXES", "EvaluationResult", "default_nsd_tolerance_mm", "evaluate_folders"]

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
        overall_classes: the classes the ``overall`` statistics run over: the regions when the
            dataset defines any (BraTS WT, TC, ET), else every class.
        rows: one dict per ground-truth case × class with the keys of :data:`CSV_COLUMNS`.
        summary: the content of ``summary.json`` (NaN written as null there): dataset,
            tolerance, case counts, per class ``{metric: {mean, std, median, n, n_nan}}``,
            ``overall`` (``classes``, ``across_classes`` and ``pooled``, see
            :mod:`medsam_kit.engine.evaluation_report`) and the failure / invalid-label lists.
        missing: ground-truth case ids without a prediction.
        unmatched: prediction case ids without ground truth.
        mismatched: ``{case_id: message}`` for shape/geometry mismatches.
        unreadable: ``{case_id: message}`` for prediction files that are not label maps.
        unreadable_gt: ``{case_id: message}`` for ground truth that could not be read or that
            the dataset reader left out.
        invalid_labels: ``{case_id: message}`` for label values outside the dataset's set.
        notes: dataset problems that belong to no scored case (listed; not failures).
        files: written outputs ``{"csv" | "summary" | "plot": path}`` (empty without ``out_dir``).
    """

    dataset: str
    classes: dict[str, tuple[int, ...]]
    nsd_tolerance_mm: float
    overall_classes: tuple[str, ...] = ()
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    unreadable_gt: dict[str, str] = field(default_factory=dict)
    invalid_labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed_cases(self) -> set[str]:
        """Ground-truth case ids scored as failures (missing, mismatched, unreadable either side)."""
        return {*self.missing, *self.mismatched, *self.unreadable, *self.unreadable_gt}

    @property
    def complete(self) -> bool:
        """True when every ground-truth case was scored with valid labels."""
        return not (self.failed_cases or self.invalid_labels)


def _failure_rows(case_id: str, classes: dict, status: str, gt: np.ndarray | None,
                  max_distance_mm: float | None) -> list[dict]:
    rows = []
    for name, values in classes.items():
        gt_voxels = int(np.count_nonzero(np.isin(gt, values))) if gt is not None else None
        rows.append({"case_id": case_id, "class": name, **_FAILED, "gt_voxels": gt_voxels,
                     "pred_voxels": None, "max_distance_mm": max_distance_mm, "status": status})
    return rows


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, dataset: str,
                     out_dir: str | Path | None = None, nsd_tolerance_mm: float | None = None,
                     subset: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Score every ground-truth case (see the module docstring for pairing and failures).

    Args:
        pred_dir: folder of predicted label maps ``<case_id><suffix>``, each on its ground
            truth's grid (same ``(Z, Y, X)`` shape, and the same geometry where the file stores one).
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
        ValueError: unknown dataset, bad tolerance, clashing case ids, a raw root the adapter rejects
            (or whose every labeled case it rejects), no foreground class to score, a flat BraTS
            folder labelled with the other BraTS naming's ET value.
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
    found = find_ground_truth(gt_dir, dataset, subset)
    spec, gts = found.spec, found.cases
    tolerance = default_nsd_tolerance_mm(spec) if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    same_folder = out_dir is not None and Path(out_dir).resolve() == pred_dir.resolve()
    preds = flat_files(pred_dir, (), exclude=set(OUTPUT_FILES) if same_folder else set())
    classes = {name: tuple(values) for name, values in spec.evaluation_classes().items()}
    if not classes:
        raise ValueError(f"{gt_dir}: the {spec.name} labels {dict(spec.label_names)} define no foreground "
                         "class to score; add the classes (nnU-Net: 'labels' in dataset.json)")
    # Regions are unions of labels (BraTS WT = NCR + ED + ET): averaging both would weigh the
    # same voxels several times, so the overall statistics use the regions alone.
    overall = tuple(spec.regions) if spec.regions else tuple(classes)
    allowed = set(spec.label_values) | ({spec.ignore_label} if spec.ignore_label is not None else set())
    stems = {case_file_stem(case_id): case_id for case_id in gts}
    result = EvaluationResult(dataset, classes, tolerance, overall_classes=overall,
                              unmatched=sorted(set(preds) - set(stems)), notes=list(found.notes))
    guard = BratsNamingGuard.for_dataset(dataset, found.flat)

    case_ids = sorted(gts)
    for done, case_id in enumerate(case_ids, start=1):
        pred_path = preds.get(case_file_stem(case_id))
        result.rows.extend(_score_case(gts[case_id], pred_path, spec, classes, allowed, tolerance, result,
                                       guard))
        if progress is not None:
            progress(done, len(case_ids))

    result.summary = summarize(result, len(case_ids), pred_dir=pred_dir, gt_dir=gt_dir)
    if out_dir is not None:
        result.files = write_outputs(result, Path(out_dir))
    return result


def _grid_mismatch(pred_path: Path, pred: np.ndarray, pred_geometry: Geometry | None, gt_case: GroundTruth,
                   gt: np.ndarray, gt_geometry: Geometry | None) -> str | None:
    """Why a prediction is not on its ground truth's grid (None when it is)."""
    difference = grid_difference(pred.shape, pred_geometry, gt.shape, gt_geometry)
    if difference is None:
        return None
    if difference[0] == "shape":
        return (f"{pred_path}: shape {pred.shape} differs from ground truth {gt_case.path} {gt.shape}; write "
                "predictions on the ground truth's grid")
    return (f"{pred_path}: geometry differs from ground truth {gt_case.path}: {difference[1]}; predictions are "
            "never resampled, write them on the ground truth's grid")


def _score_case(gt_case: GroundTruth, pred_path: Path | None, spec: DatasetSpec, classes: dict,
                allowed: set[int], tolerance: float, result: EvaluationResult,
                guard: Callable[[np.ndarray, Path], None] | None = None) -> list[dict]:
    """Rows of one case; records missing / unreadable / mismatched / invalid labels in ``result``."""
    case_id = gt_case.case_id
    if pred_path is None:
        result.missing.append(case_id)
    # The ground truth is read even without a prediction: its problems are reported either way
    # and a missing case's rows still say how many ground-truth voxels it has.
    try:
        gt, gt_geometry = gt_case.load()
    except _READ_ERRORS as exc:
        result.unreadable_gt[case_id] = message(exc, gt_case.path)
        return _failure_rows(case_id, classes, "unreadable_gt", None, None)
    if guard is not None:
        guard(gt, gt_case.path)
    if pred_path is None:
        spacing = (gt_geometry or Geometry()).spacing_zyx
        return _failure_rows(case_id, classes, "missing", gt, image_diagonal_mm(gt.shape, spacing))
    try:
        pred, pred_geometry = read_label_map(pred_path, binarize=gt_case.binarize)
    except _READ_ERRORS as exc:
        result.unreadable[case_id] = message(exc, pred_path)
        spacing = (gt_geometry or Geometry()).spacing_zyx
        return _failure_rows(case_id, classes, "unreadable", gt, image_diagonal_mm(gt.shape, spacing))
    # Distances in mm need a geometry: the ground truth's, else the prediction's (a flat folder
    # of plain TIFF ground truth), else the identity grid (1 mm voxels).
    geometry = gt_geometry or pred_geometry or Geometry()
    max_distance = image_diagonal_mm(gt.shape, geometry.spacing_zyx)
    mismatch = _grid_mismatch(pred_path, pred, pred_geometry, gt_case, gt, gt_geometry)
    if mismatch is not None:
        result.mismatched[case_id] = mismatch
        return _failure_rows(case_id, classes, "mismatch", gt, max_distance)
    outside = {path: sorted(set(np.unique(labels).tolist()) - allowed)
               for path, labels in ((pred_path, pred), (gt_case.path, gt))}
    if any(outside.values()):
        found = "; ".join(f"{path} has {values}" for path, values in outside.items() if values)
        result.invalid_labels[case_id] = (f"label values outside the {spec.name} set {sorted(allowed)}: "
                                          f"{found} (wrong dataset?)")
    scores = class_metrics(pred, gt, classes, geometry.spacing_zyx, tolerance, ignore_label=spec.ignore_label)
    return [{"case_id": case_id, "class": name, **values, "max_distance_mm": max_distance, "status": "ok"}
            for name, values in scores.items()]
