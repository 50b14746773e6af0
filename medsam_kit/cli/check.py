"""``medsam-kit check DATASET DIR``: verify a raw dataset folder before preparing or training on it."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from medsam_kit.cli._progress import progress_bar
from medsam_kit.data.integrity import ERROR, KINDS, WARNING, check_dataset

_DESCRIPTION = (
    "Check a raw dataset folder the way nnU-Net verifies its datasets, reporting every problem instead "
    "of stopping at the first.",
    "A case the layout cannot complete (missing modality or frame, mask without image, ...) is reported "
    "and left out; the other cases are still checked. Per case, one file at a time (header first, then "
    "pixels), with the rules loading applies: files must exist (a broken symbolic link counts as missing) "
    "and read completely; one channel per file; all channels and the label must share one grid (shape, and "
    "spacing/origin within a thousandth of a voxel, direction within 1e-4); images must be finite and not "
    "empty or constant; labels must be whole numbers within the dataset's label set (offending values are "
    "listed with voxel counts); an all-background label is a warning. ACDC cine (4D) files must read and "
    "match Info.cfg and the frames' grid. Case ids must be unique, and for nnU-Net folders dataset.json "
    "must agree with the files (numTraining, file_ending).",
    "Prints one line per problem, errors first, then warnings ('error [KIND] FILE: what is wrong — what "
    "to do'), and a summary line. Exit status: 0 when there are no errors (warnings are allowed), 1 "
    "when there are, 2 for an unknown DATASET.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    kinds = "\n".join(f"  {kind:<18} {meaning}" for kind, meaning in KINDS.items())
    parser = subparsers.add_parser(
        "check",
        help="check a raw dataset folder for missing, corrupt or inconsistent files",
        # Raw formatting keeps the kinds table aligned; paragraphs are wrapped here instead.
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(p, 95, break_on_hyphens=False) for p in _DESCRIPTION),
        epilog=f"problem kinds:\n{kinds}",
    )
    parser.add_argument("dataset", metavar="DATASET",
                        help="dataset layout of DIR: acdc, bhsd, brats, brats2021, em or nnunet")
    parser.add_argument("root", metavar="DIR", type=Path, help="the dataset's raw folder")
    parser.add_argument("--max-problems", type=int, default=50, metavar="N",
                        help="print at most N problem lines (errors first; default 50, 0 prints all); "
                             "the summary counts every problem")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_problems < 0:
        raise ValueError(f"--max-problems must be 0 (all) or more, got {args.max_problems}")
    with progress_bar(f"check {args.dataset}") as progress:
        problems = check_dataset(args.dataset, args.root, progress=progress)
    checked = progress.done
    errors = [p for p in problems if p.severity == ERROR]
    warnings = [p for p in problems if p.severity == WARNING]
    ordered = errors + warnings
    shown = ordered if args.max_problems == 0 else ordered[: args.max_problems]
    for problem in shown:
        print(f"{problem.severity} [{problem.kind}] {problem}")
    if len(shown) < len(ordered):
        print(f"... {len(ordered) - len(shown)} more problems not shown (--max-problems 0 lists all)")
    print(f"{checked} cases checked, {len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0
