"""Score a folder of predicted label maps against ground truth, per case and per class.

Pairing is by case id. Predictions are files ``<case_id><suffix>`` in one folder (any volume
suffix of :mod:`medsam_kit.io`); a ``/`` in a case id (EM ``lucchi/testing``) is ``__`` in the
file name (:func:`medsam_kit.data.case.case_file_stem`). The ground truth is either

(a) a raw dataset root that the dataset's adapter recognises (ACDC, BHSD, BraTS, EM,
    nnU-Net raw): labels are read through the adapter, so they get the adapter's value
    mapping (EM 255 → 1, instance ids binarised) and the same geometry as the images that
    the predictions were made from; or
(b) a flat folder of label files ``<case_id><suffix>``. A trailing ``_gt``, ``_seg``, ``-seg``
    or ``_groundtruth`` is removed from the stem, so ACDC's ``patient001_frame01_gt.nii.gz`` pairs with
    the prediction ``patient001_frame01.nii.gz``. For ``nnunet`` the labels come from
    ``dataset.json`` in that folder or its parent (``labelsTr/``). Values are used as stored
    (a Lucchi mask holds 255, not 1: score EM through its raw root instead).

Nothing is skipped silently and nothing is resampled:

* a ground-truth case without a prediction is **missing**, a prediction file that does not
  read as a label map is **unreadable**, and a prediction whose shape or geometry differs
  from its ground truth (``Geometry.almost_equal``: within a thousandth of a voxel) is **mismatched**. These
  cases stay in ``metrics.csv`` and in the summary as failures — Dice 0, IoU 0, NSD 0,
  HD95/ASSD NaN (their ``status`` column says why) — so an incomplete prediction set can
  never look better than a complete one;
* a prediction without ground truth is **unmatched** (listed, not scored);
* label values outside the dataset's set are listed per case (they belong to no class,
  which usually means the wrong ``dataset`` was given, e.g. BraTS 2021 ET=4 as ``brats``).

Summary statistics skip NaN values and report how many there were (``n_nan``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.case import case_file_stem
from medsam_kit.data.datasets import SPECS, DatasetSpec
from medsam_kit.engine.metrics import METRIC_NAMES, class_metrics
from medsam_kit.io import (
    VOLUME_SUFFIXES,
    Geometry,
    atomic_path,
    atomic_write_text,
    read_volume,
    strip_volume_suffix,
)

#: Columns of ``metrics.csv``; ``status`` is ok / missing / mismatch / unreadable.
CSV_COLUMNS = ("case_id", "class", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "gt_voxels", "pred_voxels",
               "status")
#: Stem endings removed from flat ground-truth file names (ACDC ``_gt``, BraTS-style ``_seg``/``-seg``,
#: Lucchi ``_groundtruth``).
GT_STEM_SUFFIXES = ("_groundtruth", "_gt", "_seg", "-seg")
_FAILED = {"dice": 0.0, "iou": 0.0, "hd95_mm": math.nan, "assd_mm": math.nan, "nsd": 0.0}
_OUTPUT_FILES = ("metrics.csv", "summary.json", "metrics.png")


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
            tolerance, case counts, per class ``{metric: {mean, std, median, n, n_nan}}`` where
            ``n`` counts the finite values that the statistics use, ``mean_over_classes``, and
            the missing / unmatched / mismatched / unreadable / invalid-label lists.
        missing: ground-truth case ids without a prediction.
        unmatched: prediction case ids without ground truth.
        mismatched: ``{case_id: message}`` for shape/geometry mismatches.
        unreadable: ``{case_id: message}`` for prediction files that are not label maps.
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
    invalid_labels: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every ground-truth case was scored with valid labels."""
        return not (self.missing or self.mismatched or self.unreadable or self.invalid_labels)


@dataclass
class _GroundTruth:
    case_id: str
    path: Path
    load: Callable[[], tuple[np.ndarray, Geometry]]


def _flat_case_id(name: str, strip: tuple[str, ...]) -> str:
    stem = strip_volume_suffix(name)
    for suffix in strip:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _scan_flat(folder: Path, strip: tuple[str, ...], exclude: Collection[str] = ()) -> dict[str, Path]:
    """``{case_id: file}`` for the volume files directly in ``folder`` (hidden/temporary files skipped)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        lower = path.name.lower()
        skip = lower.startswith(".") or lower in exclude or not lower.endswith(VOLUME_SUFFIXES)
        if skip or not path.is_file():
            continue
        case_id = _flat_case_id(path.name, strip)
        if case_id in found:
            raise ValueError(f"{folder}: {found[case_id].name} and {path.name} both give case id "
                             f"{case_id!r}; keep one file per case")
        found[case_id] = path
    return found


def _read_flat_label(path: Path) -> tuple[np.ndarray, Geometry]:
    volume = read_volume(path)
    return volume.array, volume.geometry


def _adapter(dataset: str):
    """The dataset's adapter, or None while the registry is not available / does not know the name."""
    try:  # optional: flat label folders work without adapters
        from medsam_kit.data.adapters import get_adapter
    except ImportError:
        return None
    try:
        return get_adapter(dataset)
    except (KeyError, ValueError):
        return None


def _ground_truth(gt_dir: Path, dataset: str,
                  subset: str | None) -> tuple[DatasetSpec, dict[str, _GroundTruth]]:
    """Spec and ground-truth cases of a raw dataset root (a) or a flat label folder (b)."""
    adapter = _adapter(dataset)
    labeled = []
    if adapter is not None:
        try:
            labeled = [r for r in adapter.discover(gt_dir) if r.labeled]
        except (FileNotFoundError, ValueError):
            labeled = []  # not a raw root of this dataset: try a flat folder of labels
    if labeled:
        records = [r for r in labeled if subset in (None, r.subset)]
        if not records:
            raise ValueError(f"{gt_dir}: no labeled cases in subset {subset!r}; subsets with labels: "
                             f"{sorted({r.subset for r in labeled})}")

        # The adapter knows each layout's label encoding and geometry (the grid predictions are on).
        cases = {r.case_id: _GroundTruth(r.case_id, Path(r.label_file), r.load_label) for r in records}
        return adapter.spec(gt_dir), cases
    if subset is not None:
        raise ValueError(f"{gt_dir}: a subset ({subset!r}) can only be chosen in a raw {dataset} dataset "
                         "root, and this folder is not one")
    if dataset == "nnunet":
        root = next((d for d in (gt_dir, gt_dir.parent) if (d / "dataset.json").is_file()), None)
        if root is None or adapter is None:
            raise FileNotFoundError(f"{gt_dir}: nnunet evaluation needs dataset.json in this folder or its "
                                    "parent (point --gt at the nnU-Net raw dataset root or its labelsTr/)")
        spec = adapter.spec(root)
    else:
        spec = SPECS[dataset]
    files = _scan_flat(gt_dir, GT_STEM_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{gt_dir}: found no ground truth: expected a raw {dataset} dataset root or "
                                "a folder of label files <case_id>.nii.gz (or another volume suffix)")
    return spec, {cid: _GroundTruth(cid, p, lambda p=p: _read_flat_label(p)) for cid, p in files.items()}


def _as_label_map(array: np.ndarray, path: Path) -> np.ndarray:
    """``(Z, Y, X)`` integer label map, or ValueError naming the file."""
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a (Z, Y, X) label map, found shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not (np.all(np.isfinite(array)) and np.array_equal(array, np.round(array))):
            raise ValueError(f"{path}: holds non-integer values (probabilities?); write integer label maps")
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: expected integer labels, found dtype {array.dtype}")
    return array


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
        nsd_tolerance_mm: NSD tolerance in mm; None for :func:`default_nsd_tolerance_mm`.
        subset: with a raw root, score only cases of this subset (e.g. ACDC ``'testing'``).
        progress: optional ``progress(done, total)`` called after each ground-truth case.

    Returns:
        :class:`EvaluationResult`.

    Raises:
        ValueError: unknown dataset, unreadable ground truth, clashing case ids.
        FileNotFoundError: a folder does not exist or holds no ground truth.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if dataset not in SPECS and dataset != "nnunet":
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join([*SPECS, 'nnunet'])}")
    for name, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {name} folder does not exist")
    spec, gts = _ground_truth(gt_dir, dataset, subset)
    tolerance = default_nsd_tolerance_mm(spec) if nsd_tolerance_mm is None else float(nsd_tolerance_mm)
    same_folder = out_dir is not None and Path(out_dir).resolve() == pred_dir.resolve()
    preds = _scan_flat(pred_dir, (), exclude=set(_OUTPUT_FILES) if same_folder else set())
    classes = {name: tuple(values) for name, values in spec.evaluation_classes().items()}
    allowed = set(spec.label_values) | ({spec.ignore_label} if spec.ignore_label is not None else set())
    stems = {case_file_stem(case_id): case_id for case_id in gts}
    result = EvaluationResult(dataset, classes, tolerance, unmatched=sorted(set(preds) - set(stems)))

    case_ids = sorted(gts)
    for done, case_id in enumerate(case_ids, start=1):
        pred_path = preds.get(case_file_stem(case_id))
        result.rows.extend(_score_case(gts[case_id], pred_path, spec, classes, allowed, tolerance, result))
        if progress is not None:
            progress(done, len(case_ids))

    result.summary = _summarize(result, len(case_ids), pred_dir=pred_dir, gt_dir=gt_dir)
    if out_dir is not None:
        result.files = _write_outputs(result, Path(out_dir))
    return result


def _score_case(gt_case: _GroundTruth, pred_path: Path | None, spec: DatasetSpec, classes: dict,
                allowed: set[int], tolerance: float, result: EvaluationResult) -> list[dict]:
    """Rows of one case; records missing / unreadable / mismatched / invalid labels in ``result``."""
    case_id = gt_case.case_id
    if pred_path is None:
        result.missing.append(case_id)
        return _failure_rows(case_id, classes, "missing", None)
    gt_array, gt_geometry = gt_case.load()
    gt = _as_label_map(gt_array, gt_case.path)
    try:
        pred_volume = read_volume(pred_path)
        pred = _as_label_map(pred_volume.array, pred_path)
    except ValueError as exc:
        result.unreadable[case_id] = str(exc)
        return _failure_rows(case_id, classes, "unreadable", gt)
    if pred.shape != gt.shape:
        result.mismatched[case_id] = (f"{pred_path}: shape {pred.shape} differs from ground truth "
                                      f"{gt_case.path} {gt.shape}; write predictions on the ground truth's "
                                      "grid")
        return _failure_rows(case_id, classes, "mismatch", gt)
    if not pred_volume.geometry.almost_equal(gt_geometry):
        difference = pred_volume.geometry.describe_difference(gt_geometry)
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


def _statistics(values: list[float]) -> dict:
    """mean / std (population, ddof=0) / median over the finite values; ``n_nan`` counts the rest."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    stats = {"n": int(finite.size), "n_nan": int(array.size - finite.size)}
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, **stats}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite)),
            **stats}


def _summarize(result: EvaluationResult, n_cases: int, pred_dir: Path, gt_dir: Path) -> dict:
    per_class = {}
    for name, values in result.classes.items():
        rows = [r for r in result.rows if r["class"] == name]
        per_class[name] = {"labels": list(values),
                           **{metric: _statistics([r[metric] for r in rows]) for metric in METRIC_NAMES}}
    overall = {m: _statistics([c[m]["mean"] for c in per_class.values()])["mean"] for m in METRIC_NAMES}
    n_failed = len(result.missing) + len(result.mismatched) + len(result.unreadable)
    return {
        "dataset": result.dataset,
        "nsd_tolerance_mm": result.nsd_tolerance_mm,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "cases": {"ground_truth": n_cases, "scored": n_cases - n_failed, "missing": len(result.missing),
                  "mismatched": len(result.mismatched), "unreadable": len(result.unreadable),
                  "unmatched": len(result.unmatched)},
        "failures_scored_as": "dice 0, iou 0, nsd 0, hd95/assd NaN (missing, mismatched, unreadable cases)",
        "classes": per_class,
        "mean_over_classes": overall,
        "missing": result.missing,
        "unmatched": result.unmatched,
        "mismatched": result.mismatched,
        "unreadable": result.unreadable,
        "invalid_labels": result.invalid_labels,
    }


def _json_safe(value):
    """NaN/inf → None: strict JSON has no NaN, and readers (jq, JavaScript) reject it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def _write_outputs(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in zip(("csv", "summary", "plot"), _OUTPUT_FILES, strict=True)}
    atomic_write_text(files["csv"], _csv_text(result.rows))
    atomic_write_text(files["summary"], json.dumps(_json_safe(result.summary), indent=2) + "\n")
    _plot(result, files["plot"])
    return files


def _plot(result: EvaluationResult, path: Path) -> None:
    """Per-class box plot with the individual cases overlaid, for Dice and HD95."""
    # Figure + Agg canvas directly instead of pyplot: no global backend switch in the
    # caller's process (notebooks keep theirs) and no GUI toolkit needed on servers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result.classes)
    figure = Figure(figsize=(max(6.0, 1.1 * len(names) + 2), 7), constrained_layout=True)
    FigureCanvasAgg(figure)
    jitter = np.random.default_rng(0)  # fixed: the same results draw the same picture
    panels = (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"))
    for ax, (metric, label) in zip(figure.subplots(2, 1), panels, strict=True):
        raw = [np.asarray([r[metric] for r in result.rows if r["class"] == n], dtype=float) for n in names]
        data = [d[np.isfinite(d)] for d in raw]
        positions = np.arange(1, len(names) + 1)
        ax.boxplot([d if d.size else [np.nan] for d in data], positions=positions, widths=0.5,
                   showfliers=False)  # the strip shows every case, outliers included
        for pos, values in zip(positions, data, strict=True):
            x = pos + jitter.uniform(-0.15, 0.15, values.size)
            ax.scatter(x, values, s=10, alpha=0.6, color="tab:blue")
        # A class whose HD95 is NaN for some cases (one mask empty) says so under its name.
        n_nan = [d.size - f.size for d, f in zip(raw, data, strict=True)]
        ax.set_xticks(positions, [f"{n}\n({k} NaN)" if k else n for n, k in zip(names, n_nan, strict=True)])
        ax.set_ylabel(label)
        if metric == "dice":
            ax.set_ylim(-0.02, 1.02)  # fixed scale: plots of different runs compare at a glance
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{result.dataset}: {len({r['case_id'] for r in result.rows})} cases")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
