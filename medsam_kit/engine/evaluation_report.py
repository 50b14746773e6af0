"""Summary statistics and output files of an evaluation: ``metrics.csv``, ``summary.json``, ``metrics.png``.

:func:`summarize` builds the content of ``summary.json`` from the per case × class rows of
:func:`medsam_kit.engine.evaluation.evaluate_folders`; :func:`write_outputs` writes the three
files atomically. Every statistic is a ``{mean, std, median, n, n_nan}`` dict over the finite
values (``std`` is the population standard deviation, ddof = 0; ``n`` counts the finite values
used, ``n_nan`` the NaN ones left out). Three levels are reported, each named for what it runs over:

* ``classes.<name>.<metric>``: across the cases of one class (one value per ground-truth case).
* ``overall.across_classes.<metric>``: across the per-class means (one value per class; every
  class weighs the same, however many voxels or NaN values it has). Its ``mean`` is the "mean
  Dice over classes" that papers report; its ``std`` is the spread between classes.
* ``overall.pooled.<metric>``: across every case × class value together (one value per row of
  ``metrics.csv``); its ``std`` mixes case-to-case and class-to-class spread.
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

#: Columns of ``metrics.csv``; ``status`` is ok / missing / mismatch / unreadable / unreadable_gt.
CSV_COLUMNS = ("case_id", "class", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "gt_voxels", "pred_voxels",
               "status")
#: File names written into the output folder (never read back as predictions).
OUTPUT_FILES = ("metrics.csv", "summary.json", "metrics.png")
#: What ``overall`` in ``summary.json`` holds, written into the file so it reads on its own.
OVERALL_DEFINITIONS = {
    "across_classes": "statistics of the per-class means (one value per class, each class weighs the same)",
    "pooled": "statistics of all case x class values together (one value per row of metrics.csv)",
}
FAILURES_SCORED_AS = ("dice 0, iou 0, nsd 0, hd95/assd NaN (missing, mismatched or unreadable predictions "
                      "and unreadable ground truth)")


def statistics(values: list[float]) -> dict:
    """``{mean, std, median, n, n_nan}`` over the finite values (std with ddof=0); NaN when none."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    stats = {"n": int(finite.size), "n_nan": int(array.size - finite.size)}
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, **stats}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "median": float(np.median(finite)),
            **stats}


def summarize(result: EvaluationResult, n_cases: int, pred_dir: Path, gt_dir: Path) -> dict:
    """The content of ``summary.json`` (see the module docstring for the statistics)."""
    per_class = {}
    for name, values in result.classes.items():
        rows = [r for r in result.rows if r["class"] == name]
        per_class[name] = {"labels": list(values),
                           **{metric: statistics([r[metric] for r in rows]) for metric in METRIC_NAMES}}
    overall = {
        "across_classes": {m: statistics([c[m]["mean"] for c in per_class.values()]) for m in METRIC_NAMES},
        "pooled": {m: statistics([r[m] for r in result.rows]) for m in METRIC_NAMES},
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
        "classes": per_class,
        "overall": overall,
        "overall_definitions": OVERALL_DEFINITIONS,
        "missing": result.missing,
        "unmatched": result.unmatched,
        "mismatched": result.mismatched,
        "unreadable": result.unreadable,
        "unreadable_gt": result.unreadable_gt,
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
