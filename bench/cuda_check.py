"""CUDA check: the shipped ACDC config trained with AMP on a GPU, resume on the GPU, GPU vs CPU inference.

    python bench/cuda_check.py [--out bench/results] [--steps 1500]

Needs a CUDA device (CI has none; this is what to run on a GPU machine after an install). On 10
ACDC phantom patients it measures, side by side in one run:

* the default supervised run (``configs/experiments/acdc_supervised.yaml``) on ``cuda`` with
  mixed precision: wall time, seconds per step, best validation Dice;
* resume on the GPU: a 40-step run stopped at step 20 and resumed, against the uninterrupted run
  (largest loss difference; CUDA kernels are not bit-deterministic, so a tolerance, not equality);
* automatic segmentation of the split's test patients on ``cuda`` and on ``cpu`` from the same run:
  Dice against the ground truth for each device, and the Dice agreement between the two devices.

Writes ``cuda_check.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.phantoms import generate_phantoms
from medsam_kit.engine.config import load_config
from medsam_kit.engine.metrics import class_metrics
from medsam_kit.engine.trainer import Trainer
from medsam_kit.infer import Segmenter

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "acdc_supervised.yaml"
NAMES = {"RV": (1,), "MYO": (2,), "LV": (3,)}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--device", default="cuda", help="the device under test (cpu only to dry-run this script)")
    args = parser.parse_args()
    gpu = args.device
    if gpu.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    work = Path(tempfile.mkdtemp(prefix="cuda_check_"))
    raw = generate_phantoms("acdc", work / "raw", cases=10)
    report: dict = {"gpu": torch.cuda.get_device_name() if gpu.startswith("cuda") else gpu,
                    "torch": torch.__version__}

    config = load_config(CONFIG, {"data.raw": str(raw), "train.device": gpu, "train.steps": args.steps})
    start = time.perf_counter()
    result = Trainer(config, work / "run").fit()
    wall = time.perf_counter() - start
    lines = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x["seconds"] for x in lines if x["kind"] == "train"]
    report["train"] = {"steps": args.steps, "wall_s": round(wall, 1), "median_step_s": float(np.median(steps)),
                       "best_val_dice": result.best_val_dice, "best_step": result.best_step,
                       "amp": config.train.amp}
    print(f"train on {gpu}: {args.steps} steps in {wall:.1f} s, best val Dice {result.best_val_dice:.3f}", flush=True)

    short = load_config(CONFIG, {"data.raw": str(raw), "train.device": gpu, "train.steps": 40,
                                 "train.val_every": 0, "train.validate_at_start": False})
    full = Trainer(short, work / "full").fit()
    Trainer(short, work / "split").fit(stop_at=20)
    resumed = Trainer(short, work / "split").fit(resume=True)
    gap = float(np.max(np.abs(np.array(resumed.losses) - np.array(full.losses[20:]))))
    report["resume"] = {"max_loss_difference": gap, "losses_compared": len(resumed.losses)}
    print(f"resume on {gpu}: largest loss difference over {len(resumed.losses)} steps {gap:.2e}", flush=True)

    split = json.loads((work / "run" / "split.json").read_text())
    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    segmenters = {"cuda": Segmenter.from_run(work / "run", device=gpu), "cpu": Segmenter.from_run(work / "run")}
    cases = {}
    for case_id in split["test"]:
        case = records[case_id].load()
        labels, seconds = {}, {}
        for device, segmenter in segmenters.items():
            tic = time.perf_counter()
            labels[device] = segmenter.segment_volume(case.image, geometry=case.geometry).labels
            seconds[device] = round(time.perf_counter() - tic, 3)
        spacing = case.geometry.spacing_zyx
        cases[case_id] = {
            "dice": {d: {k: round(v["dice"], 4) for k, v in class_metrics(labels[d], case.label, NAMES, spacing,
                                                                            2.0).items()} for d in labels},
            "agreement": {k: round(_dice(labels["cuda"] == v[0], labels["cpu"] == v[0]), 4) for k, v in NAMES.items()},
            "seconds": seconds,
        }
        print(case_id, cases[case_id], flush=True)
    report["inference"] = cases
    for device in ("cuda", "cpu"):
        report[f"mean_dice_{device}"] = float(np.mean([v for c in cases.values() for v in c["dice"][device].values()]))
    report["mean_agreement"] = float(np.mean([v for c in cases.values() for v in c["agreement"].values()]))
    print(f"automatic mean Dice: cuda {report['mean_dice_cuda']:.3f}, cpu {report['mean_dice_cpu']:.3f}; "
          f"cuda-cpu agreement {report['mean_agreement']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_check.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'cuda_check.json'}")


if __name__ == "__main__":
    main()
