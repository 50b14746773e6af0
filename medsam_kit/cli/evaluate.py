"""``medsam-kit evaluate --pred DIR --gt DIR --dataset NAME``: Dice, IoU, HD95, ASSD, NSD per case × class."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsam_kit.cli._progress import progress_bar
from medsam_kit.data.datasets import SPECS
from medsam_kit.engine.evaluation import EvaluationResult, evaluate_folders

_EPILOG = """\
pairing:
  predictions are PRED/<case_id>.nii.gz (any volume suffix); a "/" in a case id (EM
  lucchi/testing) is "__" in the file name. GT is a raw dataset root that the dataset's
  adapter recognises, or a flat folder of label files <case_id>.nii.gz; in a flat folder a
  trailing _gt, _seg, -seg or _groundtruth is dropped (ACDC patient001_frame01_gt.nii.gz
  pairs with patient001_frame01.nii.gz). Predictions must be on the ground truth's grid
  (same shape; same spacing, origin, direction where the prediction file stores them - a
  plain .tif/.png/.h5 stores none and is scored on the ground truth's geometry); nothing is
  resampled. EM masks are binarised on both sides (0/255 and instance ids -> 0/1).

  In a raw root, a case the dataset reader cannot use (e.g. a missing image or modality)
  is listed as unreadable ground truth and the other cases are scored. A GT folder with
  sub-folders, no readable raw layout and no label files directly in it, or a raw root
  whose every case is unusable, is an error showing the dataset reader's own message.
  Reader problems that belong to no scored case (e.g. nnU-Net numTraining, a broken case
  outside --subset) are printed as notes and kept in summary.json; they do not fail the run.

  BraTS flat folders: --dataset brats (2023+) scores ET as label 3, brats2021 as label 4;
  ground truth holding the other number is an error naming the dataset to use.

scoring:
  a ground-truth case without a usable prediction (missing, unreadable, shape/geometry
  mismatch) or whose ground truth cannot be read (unreadable_gt) is kept and scored
  as a failure: Dice 0, IoU 0, NSD 0, HD95/ASSD NaN. One empty mask gives HD95/ASSD NaN;
  both empty give Dice 1, HD95 0, NSD 1. metrics.csv keeps the NaN; summary.json and the
  table count each NaN HD95/ASSD as the worst case, the ground-truth image diagonal in mm
  (max_distance_mm, as BraTS scoring does), and say how many there were (n_nan), so a
  missing or broken prediction can never improve a mean.
  summary.json: per class across cases; "overall.across_classes" across the per-class
  means (each class weighs the same); "overall.pooled" over all case x class rows. When
  the dataset has regions (BraTS WT/TC/ET) the overall statistics use the regions only
  (listed in "overall.classes"); per-label rows stay in metrics.csv and the class table.

outputs (in --out): metrics.csv (one row per case x class), summary.json, metrics.png.

exit status:
  0  every ground-truth case was scored and all label values belong to the dataset
  1  some case was missing, unreadable (prediction or ground truth) or mismatched, or
     held label values outside the dataset's set (the outputs are still written)
  2  the evaluation could not run (bad folder, no ground truth found, broken raw root,
     wrong BraTS naming)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against ground truth (Dice, IoU, HD95, ASSD, NSD)",
        description="Score every ground-truth case against the prediction with the same case id, per\n"
                    "label and per region of the dataset (e.g. BraTS WT/TC/ET), with distances in mm\n"
                    "from each volume's spacing. Writes metrics.csv, summary.json and metrics.png.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", required=True, type=Path,
                        help="folder of predicted label maps named <case_id>.<suffix>")
    parser.add_argument("--gt", required=True, type=Path,
                        help="raw dataset root, or a flat folder of ground-truth label files")
    parser.add_argument("--dataset", required=True, choices=[*sorted(SPECS), "nnunet"],
                        help="dataset family: gives the label values, names and regions to score "
                             "(nnunet: from dataset.json in --gt or its parent)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for metrics.csv, summary.json, metrics.png "
                             "(default: PRED/evaluation)")
    parser.add_argument("--nsd-tolerance", type=float, default=None, metavar="MM",
                        help="normalised surface Dice tolerance in mm (default 2; em: 1e-5 mm = 10 nm)")
    parser.add_argument("--subset", default=None,
                        help="with a raw dataset root, score only this subset (e.g. testing for ACDC)")
    parser.set_defaults(func=run)


def _mean_std(stats: dict, style: str) -> str:
    if stats["n"] == 0:
        return "n/a"
    text = f"{stats['mean']:{style}} ± {stats['std']:{style}}"
    return text + (f" ({stats['n_nan']} nan)" if stats["n_nan"] else "")


def format_table(result: EvaluationResult) -> str:
    """Compact text table: Dice, HD95 and NSD mean ± std per class, across classes, and pooled.

    The overall rows are named for what they run over: "across classes" / "pooled", or
    "across regions" / "pooled regions" when the dataset has regions (BraTS WT/TC/ET).
    """
    # Dice/NSD live in [0, 1]; HD95 in mm spans nm (EM) to cm, hence significant digits.
    columns = (("dice", ".3f"), ("hd95_mm", ".3g"), ("nsd", ".3f"))
    header = ("class", "Dice", "HD95 mm", "NSD")
    lines = [header]
    overall = result.summary["overall"]
    regions = list(overall["classes"]) != list(result.classes)
    rows = [*result.summary["classes"].items(),
            ("across regions" if regions else "across classes", overall["across_classes"]),
            ("pooled regions" if regions else "pooled", overall["pooled"])]
    for name, stats in rows:
        lines.append((name, *(_mean_std(stats[metric], style) for metric, style in columns)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                      for row in lines)
    notes = []
    if regions:
        notes.append(f"overall rows: regions {', '.join(overall['classes'])} only (labels are parts of them)")
    if any(stats["hd95_mm"]["n_nan"] for _, stats in rows):
        notes.append("nan: undefined HD95 (failed case or one empty mask), counted in mean/std as the "
                     "ground-truth image diagonal")
    return "\n".join([table, *notes])


def _problems(result: EvaluationResult) -> list[str]:
    lines = []
    for title, items in (("missing predictions", result.missing),
                         ("unmatched predictions (no ground truth)", result.unmatched)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
            lines.append(f"{title} ({len(items)}): {shown}")
    for title, messages in (("mismatched", result.mismatched), ("unreadable", result.unreadable),
                            ("unreadable ground truth", result.unreadable_gt),
                            ("label values outside the dataset", result.invalid_labels)):
        lines.extend(f"{title}: {case_id}: {message}" for case_id, message in messages.items())
    lines.extend(f"ground truth note: {note}" for note in result.notes)
    return lines


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.pred / "evaluation"
    with progress_bar("evaluate") as progress:
        result = evaluate_folders(args.pred, args.gt, args.dataset, out_dir=out,
                                  nsd_tolerance_mm=args.nsd_tolerance, subset=args.subset, progress=progress)
    cases = result.summary["cases"]
    print(f"{args.dataset}: {cases['scored']}/{cases['ground_truth']} cases scored, "
          f"NSD tolerance {result.nsd_tolerance_mm:g} mm")
    print(format_table(result))
    for line in _problems(result):
        print(f"warning: {line}", file=sys.stderr)
    for path in result.files.values():
        print(f"wrote {path}")
    return 0 if result.complete else 1
