"""``medsam-kit phantoms DATASET --out DIR``: write synthetic data in a dataset's raw layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsam_kit.cli._progress import progress_bar
from medsam_kit.data.phantoms import (
    DEFAULT_STYLE,
    GENERATORS,
    STYLES,
    generate_phantoms,
    phantom_styles,
    require_empty_or_overwrite,
)
from medsam_kit.data.phantoms.predictions import simulate_predictions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantoms",
        help="write synthetic phantoms in a dataset's raw layout",
        description="Write a synthetic dataset with the raw layout of DATASET (same file names, dtypes, "
                    "label values, orientation and anisotropy as the real release) so every other verb "
                    "can be tried without downloading data. Deterministic for a seed.",
    )
    parser.add_argument("dataset", choices=sorted(GENERATORS), help="dataset layout to write")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--cases", type=int, default=None,
                        help="number of cases (patients / volumes / stacks); default: a small set for tests")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    others = ", ".join(f"{dataset}: {', '.join(styles)}" for dataset, styles in STYLES.items())
    parser.add_argument("--style", default=DEFAULT_STYLE, type=str.upper, metavar="STYLE",
                        help=f"which independently written generator (default {DEFAULT_STYLE}, the one every "
                             f"dataset has; also {others}). Style B is a second simulator written without "
                             f"the style-A code (different anatomy model, placement, contrast, noise and "
                             f"artefacts): choose settings on style A and report them on style B to check "
                             f"that they hold on data they were not tuned on")
    parser.add_argument("--predictions", type=Path, metavar="DIR",
                        help="also write simulated predictions (each labeled case's ground truth with realistic "
                             "errors: eroded/dilated, shifted, a missed slice, a spurious blob) to DIR as "
                             "<case_id>.nii.gz, for trying `medsam-kit evaluate` before a model is trained")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out (and --predictions) when they already hold files; without it a "
                             "non-empty folder is refused so two runs never mix")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    styles = phantom_styles(args.dataset)
    if args.style not in styles:
        raise ValueError(f"--style {args.style}: {args.dataset} phantoms come in style(s) {', '.join(styles)}")
    if args.predictions is not None:  # refuse before minutes of generation, not after
        require_empty_or_overwrite(args.predictions, args.overwrite, "predictions")
    style = "" if args.style == DEFAULT_STYLE else f" (style {args.style})"
    with progress_bar(f"phantoms {args.dataset}{style}") as progress:
        out = generate_phantoms(args.dataset, args.out, cases=args.cases, seed=args.seed, progress=progress,
                                overwrite=args.overwrite, style=args.style)
    print(f"wrote {args.dataset} phantoms{style} to {out}")
    if args.predictions is not None:
        written = simulate_predictions(args.dataset, out, args.predictions, seed=args.seed,
                                       overwrite=args.overwrite)
        print(f"wrote {len(written)} simulated predictions to {args.predictions}")
    return 0
