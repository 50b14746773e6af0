"""Benchmark: supervised-only vs SSS without DFE vs full SSS at 1, 3 and 7 labeled ACDC phantom patients.

    python bench/sss_vs_supervised.py [--patients 20] [--steps 600] [--jobs 1] [--device cpu] [--out bench/results]

Same phantom data, split, tiny model, number of steps and seed for every setting; only the
method and the labeled budget change. The split is the ACDC protocol (70 / 10 / 20 % of the
patients for train / val / test); of the training patients the first 1, 3 or 7 keep their labels
and the rest are the unlabeled pool (SSS) or unused (supervised). Each run is scored by automatic
segmentation of the test patients (mean Dice over RV / MYO / LV and the test volumes).

Writes ``sss_vs_supervised.json`` and ``sss_vs_supervised.png`` (bar chart) and prints the table.
``--jobs N`` trains N settings at once (one process each; useful on a machine with many cores or a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "acdc_sss_3cases.yaml"
METHODS = {
    "supervised": {"method": {"name": "supervised"}},
    "sss_no_dfe": {"method": {"name": "sss", "dfe": False}},
    "sss": {"method": {"name": "sss", "dfe": True}},
}
BUDGETS = (1, 3, 7)
NAMES = {"RV": (1,), "MYO": (2,), "LV": (3,)}


def run_setting(raw: str, work: str, method: str, budget: int, n_train: int, steps: int, device: str,
                threads: int = 0) -> dict:
    """Train one (method, budget) setting and score its automatic segmentation of the test patients."""
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.engine.config import config_from_dict, load_config
    from medsam_kit.engine.metrics import class_metrics
    from medsam_kit.engine.trainer import Trainer
    from medsam_kit.infer import Segmenter

    if threads:
        torch.set_num_threads(threads)
    base = load_config(CONFIG).to_dict()
    base["method"] = METHODS[method]["method"]
    base["data"].update({"raw": raw, "prepared": None, "dataset": "acdc", "labeled_budget": budget / n_train})
    base["train"].update({"steps": steps, "device": device})
    config = config_from_dict(base, f"{method}@{budget}")
    run_dir = Path(work) / f"{method}_{budget}"
    tic = time.perf_counter()
    result = Trainer(config, run_dir).fit()
    seconds = time.perf_counter() - tic
    split = json.loads((run_dir / "split.json").read_text())
    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    segmenter = Segmenter.from_run(run_dir, device=device)
    scores = []
    for case_id in split["test"]:
        case = records[case_id].load()
        labels = segmenter.segment_volume(case.image, geometry=case.geometry).labels
        metrics = class_metrics(labels, case.label, NAMES, case.geometry.spacing_zyx, 2.0)
        scores.append([metrics[k]["dice"] for k in NAMES])
    labeled = sorted({c.split("_")[0] for c in split["train_labeled"]})
    return {"method": method, "budget": budget, "labeled_patients": labeled,
            "unlabeled_volumes": len(split.get("train_unlabeled", [])), "train_seconds": round(seconds, 1),
            "best_val_dice": result.best_val_dice,
            "test_dice_per_class": dict(zip(NAMES, np.mean(scores, 0).tolist(), strict=True)),
            "test_mean_dice": float(np.mean(scores))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20, help="phantom patients (default 20: 11 train)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    from medsam_kit.data.phantoms import generate_phantoms

    work = Path(tempfile.mkdtemp(prefix="sss_bench_"))
    raw = str(generate_phantoms("acdc", work / "raw", cases=args.patients, seed=0))
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.splits import make_split

    # the protocol's training patients of this folder; a budget b is passed as the fraction b / n_train,
    # which the split turns back into exactly b patients (an int budget would be rescaled from ACDC's 70)
    full = make_split(get_adapter("acdc").discover(raw), "acdc")
    n_train = len({c.split("_")[0] for c in full.train_labeled})
    settings = [(m, b) for b in BUDGETS for m in METHODS if b < n_train]
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    jobs = [(raw, str(work), m, b, n_train, args.steps, args.device, threads) for m, b in settings]
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "sss_vs_supervised.jsonl"  # one line per finished setting (survives an interruption)
    partial.write_text("")
    rows = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for row in pool.map(run_setting, *zip(*jobs, strict=True)):
            rows.append(row)
            with partial.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['method']:>12s} @ {row['budget']} labeled: test mean Dice {row['test_mean_dice']:.3f} "
                  f"({row['train_seconds']:.0f} s)", flush=True)
    print(f"{'budget':>6s} " + " ".join(f"{m:>12s}" for m in METHODS))
    for budget in sorted({r["budget"] for r in rows}):
        cells = {r["method"]: r["test_mean_dice"] for r in rows if r["budget"] == budget}
        print(f"{budget:6d} " + " ".join(f"{cells.get(m, float('nan')):12.3f}" for m in METHODS))
    report = {"patients": args.patients, "train_patients": n_train, "steps": args.steps, "device": args.device,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    (args.out / "sss_vs_supervised.json").write_text(json.dumps(report, indent=2))
    _plot(rows, args.out / "sss_vs_supervised.png")
    print(f"wrote {args.out / 'sss_vs_supervised.json'} and .png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in rows})
    width = 0.8 / len(METHODS)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, method in enumerate(METHODS):
        values = [next((r["test_mean_dice"] for r in rows if r["method"] == method and r["budget"] == b), 0.0)
                  for b in budgets]
        ax.bar(np.arange(len(budgets)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(budgets)) + width * (len(METHODS) - 1) / 2, [f"{b} labeled" for b in budgets])
    ax.set_ylabel("test mean Dice")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
