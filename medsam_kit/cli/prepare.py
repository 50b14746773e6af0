"""``medsam-kit prepare DATASET SRC --out DIR``: fingerprint, plan and preprocess a raw dataset once."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsam_kit.cli._progress import progress_bar
from medsam_kit.data.cache import prepare
from medsam_kit.data.splits import PROTOCOLS

_EPILOG = """\
outputs (in DIR):
  fingerprint.json   per-case spacing/shape, per-channel foreground intensity statistics
  plan.json          target spacing, orientation, per-channel normalisation (readable, editable by re-running)
  cases.json         index of the prepared cases
  cases/<id>/        image.npy (float32 C,Z,Y,X), label.npy (uint8 Z,Y,X), case.json (geometry, meta)
  split.json         train/val/test split of the dataset's protocol

Re-running with the same source and options does no work; a changed option (spacing, window,
orientation) re-prepares every case. Normalisation: CT window to [0,1]; MRI 0.5/99.5 percentile
clip + z-score; EM 0.5/99.5 percentile clip to [0,1]. Only the in-plane spacing is resampled:
SAM models segment acquired slices, so the slice spacing is kept.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="preprocess a raw dataset once (fingerprint, plan, normalised cases) for training",
        description="Discover DATASET's cases under SRC, measure a fingerprint (spacings, shapes, foreground "
        "intensity statistics), derive a preprocessing plan from it, and write every case "
        "normalised and resampled in-plane to DIR, so training never re-reads the raw files. "
        "Resumable: cases already prepared with the same plan are skipped.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset", metavar="DATASET", help="dataset layout of SRC: acdc, bhsd, brats, brats2021, em or nnunet"
    )
    parser.add_argument("src", metavar="SRC", type=Path, help="the dataset's raw folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="prepared folder (created)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        metavar="MM",
        help="in-plane target spacing in mm for x and y (default: median in-plane spacing of "
        "the dataset); the slice spacing is kept",
    )
    parser.add_argument(
        "--ct-window",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="CT intensity window in HU scaled to [0, 1], e.g. 0 80 for brain (default: the "
        "foreground 0.5/99.5 percentiles, as nnU-Net); CT datasets only",
    )
    parser.add_argument(
        "--orientation",
        default=None,
        metavar="CODE",
        help="reorient every case to this DICOM code, e.g. LPS, so array Z is the axial axis "
        "(default: keep the acquisition grid, which is what slice-wise SAM models need)",
    )
    parser.add_argument(
        "--split-protocol",
        choices=sorted(PROTOCOLS),
        default=None,
        help="split protocol for split.json (default: the dataset's own, e.g. acdc 70/10/20)",
    )
    parser.add_argument(
        "--labeled-budget",
        type=int,
        default=None,
        metavar="N",
        help="labeled training patients to keep in the split (e.g. 1, 3 or 7 for ACDC); "
        "the others become unlabeled training cases (default: all)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the fingerprint's voxel sampling and of the split (default 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with progress_bar(f"prepare {args.dataset}") as progress:
        result = prepare(
            args.dataset,
            args.src,
            args.out,
            target_spacing_xy=args.spacing,
            ct_window=tuple(args.ct_window) if args.ct_window else None,
            orientation=args.orientation,
            seed=args.seed,
            split_protocol=args.split_protocol,
            split_seed=args.seed,
            labeled_budget=args.labeled_budget,
            progress=progress,
        )
    spacing = ", ".join(f"{s:.4g}" for s in result.plan.target_spacing_xy)
    print(
        f"prepared {len(result.prepared)} case(s), {len(result.skipped)} already up to date, "
        f"in-plane spacing ({spacing}) mm -> {result.out_dir}"
    )
    if result.split is not None:
        counts = ", ".join(f"{part} {n}" for part, n in result.split.counts().items() if n)
        print(f"split ({result.split.protocol}): {counts}")
    if result.split_error:
        print(f"note: {result.split_error}")
    return 0
