"""``medsam-kit demo [--out DIR]``: the main job end to end on built-in synthetic ACDC data."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from medsam_kit.cli.train import TrainProgress

_EPILOG = """\
what it does (CPU, no downloads, about 10 minutes on 2 cores):
  1. writes 10 ACDC phantom patients in the real ACDC layout      -> OUT/data
  2. trains the demo config (SSS: 3 labeled + unlabeled patients)  -> OUT/run
  3. segments the held-out test patients automatically              -> OUT/predictions, OUT/overlays
  4. evaluates them against the ground truth                        -> OUT/evaluation
  5. writes OUT/summary.json, OUT/REPORT.md, OUT/progress.png and prints the table.
REPORT.md ends with the same commands for a real ACDC folder.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on synthetic ACDC data (train, segment, evaluate, report)",
        description="The main job on built-in synthetic data: ACDC phantoms -> semi-supervised training of a "
                    "tiny SAM-2.1 model -> automatic segmentation of held-out patients -> Dice / HD95 per "
                    "structure, plots and a report in one folder.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("medsam_kit_demo"),
                        help="output folder (default ./medsam_kit_demo); must be empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    parser.add_argument("--config", type=Path, default=None,
                        help="an ACDC experiment config (default configs/experiments/acdc_sss_3cases.yaml)")
    parser.add_argument("--cases", type=int, default=10, help="phantom patients (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medsam_kit.demo import DEFAULT_CONFIG, run_demo

    if args.cases < 5:
        raise ValueError(f"--cases must be at least 5 (train / validation / test patients), got {args.cases}")
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(desc=stage, total=total, unit="case", disable=None)
        bar.total, bar.n = total, done
        bar.refresh()
        if done >= total:
            bar.close()

    result = run_demo(args.out, config=args.config or DEFAULT_CONFIG, cases=args.cases, steps=args.steps,
                      device=args.device, overwrite=args.overwrite, progress=progress,
                      trainer_callbacks=[TrainProgress()])
    print(f"\nheld-out test patients, automatic segmentation ({result.out / 'evaluation'}):")
    print(f"  {'structure':10s} {'Dice':>6s} {'HD95 mm':>8s}")
    for name, row in result.table.items():
        print(f"  {name:10s} {row['dice']:6.3f} {row['hd95_mm']:8.1f}")
    print(f"  {'mean':10s} {result.mean_dice:6.3f}")
    print(f"wall time {result.seconds['total']:.0f} s (training {result.seconds['train']:.0f} s); report: "
          f"{result.out / 'REPORT.md'}")
    return 0
