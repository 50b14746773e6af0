"""Summary statistics and output files of an evaluation: ``metrics.csv``, ``summary.json``, ``metrics.png``.

:func:`summarize` builds the content of ``summary.json`` from the per case × class rows of
:func:`medsam_kit.engine.evaluation.evaluate_folders`; :func:`write_outputs` writes the three
files atomically. Every statistic is a ``{mean, std, median, n, n_nan}`` dict (``std`` is the
population standard deviation, ddof = 0; ``n`` counts the values the statistics run over,
``n_nan`` how many of the values were NaN).

Undefined distances. HD95 and ASSD are NaN in ``metrics.csv`` where a mask is empty on one side
or the case failed (missing, unreadable, mismatched). Leaving them out of a mean would reward
the failure (deleting the worst prediction would lower mean HD95), so every statistic of
``hd95_mm``/``assd_mm`` counts a NaN as the worst possible distance, the diagonal of the
ground-truth image in mm (``max_distance_mm``; BraTS scoring uses its 373.13 mm diagonal the
same way). A case whose ground truth could not be read has no diagonal of its own and gets the
largest of the run. Those values are in ``n`` and counted in ``n_nan``; a NaN is left out only
when no diagonal is known at all. Dice, IoU and NSD are never NaN (failures score 0).

Three levels are reported, each named for what it runs over:

* ``classes.<name>.<metric>``: across the cases of one class (one value per ground-truth case).
* ``overall.across_classes.<metric>``: across the per-class means of ``overall.classes`` (one
  value per class; every class weighs the same, however many voxels it has). Its ``mean`` is
  the "mean Dice over classes" that papers report; its ``std`` is the spread between classes.
* ``overall.pooled.<metric>``: across every case × class value of ``overall.classes`` together
  (one value per row of ``metrics.csv``); its ``std`` mixes case-to-case and class-to-class spread.

``overall.classes`` is every class, except for datasets with regions (BraTS: WT, TC, ET), where
it is the regions only: the labels (NCR, ED, ET) are their building blocks, and averaging both
would count the same voxels several times. Per-label statistics stay under ``classes``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsam_kit.engine.metrics import METRIC_NAMES
from medsam_kit.io import atomic_path, atomic_write_text

if TYPE_CHECKING:  # only for annotations: evaluation imports this module
    from medsam_kit.engine.evaluation import EvaluationResult

#: Columns of ``metrics.csv``; ``status`` is ok / missing / mismatch / unreadable / unreadable_gt;
#: ``max_distance_mm`` is the ground-truth image diagonal (empty when the ground truth is unreadable).
CSV_COLUMNS = ("case_id", "class", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "gt_voxels", "pred_voxels",
               "max_distance_mm", "status")
#: File names written into the output folder (never read back as predictions).
OUTPUT_FILES = ("metrics.csv", "summary.json", "metrics.png")
#: Metrics that are undefined (NaN) for an empty side; summaries count NaN as ``max_distance_mm``.
DISTANCE_METRICS = ("hd95_mm", "assd_mm")
#: What ``overall`` in ``summary.json`` holds, written into the file so it reads on its own.
OVERALL_DEFINITIONS = {
    "classes": "the classes the overall statistics run over: every class, or only the regions when the "
               "dataset defines regions (BraTS WT/TC/ET; their labels would count the same voxels twice)",
    "across_classes": "statistics of the per-class means (one value per class, each class weighs the same)",
    "pooled": "statistics of all case x class values together (one value per row of metrics.csv)",
}
FAILURES_SCORED_AS = ("dice 0, iou 0, nsd 0, hd95/assd NaN in metrics.csv (missing, mismatched or unreadable "
                      "predictions and unreadable ground truth)")
DISTANCE_NAN_POLICY = ("hd95_mm/assd_mm are NaN in metrics.csv where undefined (a failed case, or a mask empty "
                       "on one side); every statistic here counts such a NaN as the worst case, the ground-truth "
                       "image diagonal in mm (metrics.csv max_distance_mm; the largest of the run when the ground "
                       "truth is unreadable), as BraTS scoring does; n_nan says how many values that was")


def statistics(values: list[float], worst: list[float | None] | None = None) -> dict:
    """``{mean, std, median, n, n_nan}`` (std with ddof=0); NaN statistics when no value is usable.

    Args:
        values: one value per case (or class); NaN marks an undefined value.
        worst: optional replacement per value, used where the value is NaN (None or NaN: no
            replacement, the value is left out).

    Returns:
        ``n``: values used (replaced NaN included); ``n_nan``: values that were NaN.
    """
    array = np.asarray(values, dtype=float)
    n_nan = int(np.count_nonzero(~np.isfinite(array)))
    if worst is not None:
        fill = np.asarray([math.nan if w is None else w for w in worst], dtype=float)
        array = np.where(np.isfinite(array), array, fill)
    finite = array[np.isfinite(array)]
    stats = {"n": int(finite.size), "n_nan": n_nan}
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, **stats}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite)),
            **stats}


def _metric_statistics(rows: list[dict], metric: str, fallback: float) -> dict:
    """Statistics of one metric over rows; distances count NaN as the row's worst case."""
    values = [r[metric] for r in rows]
    if metric not in DISTANCE_METRICS:
        return statistics(values)
    worst = [fallback if r.get("max_distance_mm") is None else r["max_distance_mm"] for r in rows]
    return statistics(values, worst)


def summarize(result: EvaluationResult, n_cases: int, pred_dir: Path, gt_dir: Path) -> dict:
    """The content of ``summary.json`` (see the module docstring for the statistics)."""
    diagonals = [r["max_distance_mm"] for r in result.rows if r.get("max_distance_mm") is not None]
    fallback = max(diagonals) if diagonals else math.nan  # for cases whose ground truth is unreadable
    per_class = {}
    for name, values in result.classes.items():
        rows = [r for r in result.rows if r["class"] == name]
        per_class[name] = {"labels": list(values),
                           **{m: _metric_statistics(rows, m, fallback) for m in METRIC_NAMES}}
    overall_classes = list(result.overall_classes or result.classes)
    overall_rows = [r for r in result.rows if r["class"] in overall_classes]
    overall = {
        "classes": overall_classes,
        "across_classes": {m: statistics([per_class[c][m]["mean"] for c in overall_classes])
                           for m in METRIC_NAMES},
        "pooled": {m: _metric_statistics(overall_rows, m, fallback) for m in METRIC_NAMES},
    }
    return {
        "dataset": result.dataset,
        "nsd_tolerance_mm": result.nsd_tolerance_mm,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "cases": {"ground_truth": n_cases, "scored": n_cases - len(result.failed_cases),
                  "missing": len(result.missing), "mismatched": len(result.mismatched),
                  "unreadable": len(result.unreadable), "unreadable_gt": len(result.unreadable_gt),
                  "unmatched": len(result.unmatched)},
        "failures_scored_as": FAILURES_SCORED_AS,
        "distance_nan_policy": DISTANCE_NAN_POLICY,
        "classes": per_class,
        "overall": overall,
        "overall_definitions": OVERALL_DEFINITIONS,
        "missing": result.missing,
        "unmatched": result.unmatched,
        "mismatched": result.mismatched,
        "unreadable": result.unreadable,
        "unreadable_gt": result.unreadable_gt,
        "invalid_labels": result.invalid_labels,
        "notes": result.notes,
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


def csv_text(rows: list[dict]) -> str:
    """``metrics.csv`` content: a header of :data:`CSV_COLUMNS`, one line per row (None → empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def write_outputs(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """Write the three files atomically; returns ``{"csv" | "summary" | "plot": path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in zip(("csv", "summary", "plot"), OUTPUT_FILES, strict=True)}
    atomic_write_text(files["csv"], csv_text(result.rows))
    atomic_write_text(files["summary"], json.dumps(_json_safe(result.summary), indent=2) + "\n")
    plot(result, files["plot"])
    return files


def plot(result: EvaluationResult, path: Path) -> None:
    """Per-class box plot with the individual cases overlaid, for Dice and HD95, written as PNG."""
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
