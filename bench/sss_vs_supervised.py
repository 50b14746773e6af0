"""Benchmark: supervised-only vs SSS without DFE vs full SSS at 1, 3 and 7 labeled ACDC phantom patients.

    python bench/sss_vs_supervised.py [--patients 20] [--steps 1000] [--seeds 2] [--budgets 1 3 7]
                                      [--set KEY=VALUE ...] [--jobs 1] [--device cpu] [--out bench/results]

Same phantom data, split, tiny model and number of steps for every setting; only the method, the
labeled budget and the seed change. The split is the ACDC protocol (70 / 10 / 20 % of the patients
for train / val / test); of the training patients the first 1, 3 or 7 keep their labels and the
rest are the unlabeled pool (SSS) or unused (supervised). The methods are the shipped configs'
(``configs/experiments/acdc_sss_3cases.yaml``: its ``method`` section for ``sss``, the same with
``dfe: false`` for ``sss_no_dfe``, and its labeled-loss keys under ``name: supervised``). Each run
is scored by automatic segmentation of the test patients (mean Dice over RV / MYO / LV and the
test volumes); the table gives the mean and standard deviation over seeds (seed = model
initialisation, sampling and augmentation; the data stay the same). ``--set KEY=VALUE`` changes a
key of the SSS method section for both SSS settings (e.g. ``--set threshold_mode=quantile``).

Each run also records how good its final pseudo-labels are: the SSS teacher's (the supervised
model's) coarse labels of the unlabeled training patients against their hidden phantom labels, per
confidence threshold, the share of pixels kept and the share of those that are right
(``pseudo_label_calibration``); this is what the ``threshold`` should be read from.

Writes ``sss_vs_supervised.json`` (every run + the summary), ``sss_vs_supervised.jsonl`` (one line
per finished run, survives an interruption) and ``sss_vs_supervised.png`` (bar chart with the
seeds' spread) and prints the table. ``--jobs N`` trains N settings at once (one process each;
useful on a machine with many cores or a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
import yaml

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "acdc_sss_3cases.yaml"
METHODS = ("supervised", "sss_no_dfe", "sss")
NAMES = {"RV": (1,), "MYO": (2,), "LV": (3,)}
CALIBRATION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def method_section(method: str, sss: dict) -> dict:
    """The config's ``method`` section for one of :data:`METHODS`, from the shipped SSS config's."""
    from medsam_kit.methods.supervised import SupervisedParams

    if method == "supervised":
        keys = {f.name for f in dataclasses.fields(SupervisedParams)}
        return {"name": "supervised", **{k: v for k, v in sss.items() if k in keys}}
    return {**sss, "name": "sss", "dfe": method == "sss"}


def pseudo_label_calibration(trainer) -> dict:
    """Coverage / precision of the final coarse pseudo-labels on the unlabeled pool, per threshold.

    The SSS teacher's (the supervised model's for ``supervised``), scored against the phantoms' hidden
    labels of the unlabeled training patients (:class:`medsam_kit.methods.sss.PseudoLabelCalibration`).
    """
    from medsam_kit.engine.coarse import PseudoLabelCalibration

    teacher = getattr(trainer.method, "teacher", None)
    model = (teacher.model if teacher is not None else trainer.model).eval()
    counts = PseudoLabelCalibration(int(model.num_classes) + 1)
    for case in trainer.unlabeled_cases:
        trainer.predict_case(case.image, counts, np.asarray(case.label), model=model)
    return counts.summary(CALIBRATION_THRESHOLDS)


def run_setting(raw: str, work: str, method: str, budget: int, n_train: int, steps: int, device: str,
                seed: int = 0, threads: int = 0, overrides: dict | None = None) -> dict:
    """Train one (method, budget, seed) setting and score its automatic segmentation of the test patients."""
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.engine.config import config_from_dict, load_config
    from medsam_kit.engine.metrics import class_metrics
    from medsam_kit.engine.trainer import Trainer
    from medsam_kit.infer import Segmenter

    if threads:
        torch.set_num_threads(threads)
    base = load_config(CONFIG).to_dict()
    sss = {**base["method"], **(overrides or {})}
    base["method"] = {**method_section(method, sss), "seed": seed}  # prompt / view draws follow the seed too
    base["data"].update({"raw": raw, "prepared": None, "dataset": "acdc", "labeled_budget": budget / n_train})
    base["train"].update({"steps": steps, "device": device, "seed": seed})
    config = config_from_dict(base, f"{method}@{budget}/seed{seed}")
    run_dir = Path(work) / f"{method}_{budget}_seed{seed}"
    tic = time.perf_counter()
    trainer = Trainer(config, run_dir)
    result = trainer.fit()
    seconds = time.perf_counter() - tic
    calibration = pseudo_label_calibration(trainer)
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
    return {"method": method, "budget": budget, "seed": seed, "labeled_patients": labeled,
            "unlabeled_volumes": len(split.get("train_unlabeled", [])), "train_seconds": round(seconds, 1),
            "best_val_dice": result.best_val_dice,
            "test_dice_per_class": dict(zip(NAMES, np.mean(scores, 0).tolist(), strict=True)),
            "test_mean_dice": float(np.mean(scores)), "pseudo_label_calibration": calibration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20, help="phantom patients (default 20: 11 train)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of every run")
    parser.add_argument("--seeds", type=int, default=2, help="runs per setting, seeds FIRST .. FIRST+N-1")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first seed (add seeds to an earlier invocation's without rerunning them)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 3, 7], help="labeled patients")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="settings to run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the SSS method section (YAML value), repeatable")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)

    from medsam_kit.data.phantoms import generate_phantoms

    work = Path(tempfile.mkdtemp(prefix="sss_bench_"))
    raw = str(generate_phantoms("acdc", work / "raw", cases=args.patients, seed=0))
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.splits import make_split

    # the protocol's training patients of this folder; a budget b is passed as the fraction b / n_train,
    # which the split turns back into exactly b patients (an int budget would be rescaled from ACDC's 70)
    full = make_split(get_adapter("acdc").discover(raw), "acdc")
    n_train = len({c.split("_")[0] for c in full.train_labeled})
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    settings = [(m, b, s) for s in seeds for b in args.budgets for m in args.methods if b < n_train]
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0)
    jobs = [(raw, str(work), m, b, n_train, args.steps, args.device, s, threads, overrides) for m, b, s in settings]
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "sss_vs_supervised.jsonl"  # one line per finished setting (survives an interruption)
    partial.write_text("")
    rows = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_setting, *job) for job in jobs]
        for future in as_completed(futures):  # written as each run ends, not in submission order
            row = future.result()
            rows.append(row)
            with partial.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['method']:>12s} @ {row['budget']} labeled, seed {row['seed']}: test mean Dice "
                  f"{row['test_mean_dice']:.3f} ({row['train_seconds']:.0f} s); pseudo-labels kept / right: "
                  + ", ".join(f"{t} {c['coverage']:.0%} / {c['precision'] or 0:.1%}"
                              for t, c in row["pseudo_label_calibration"].items() if t in ("0.8", "0.95")), flush=True)
    rows.sort(key=lambda r: (r["budget"], METHODS.index(r["method"]), r["seed"]))
    summary = summarize(rows)
    print(f"test mean Dice, mean +- std over {args.seeds} seed(s)")
    print(f"{'budget':>6s} " + " ".join(f"{m:>15s}" for m in METHODS))
    for budget in sorted(summary):
        cells = summary[budget]
        print(f"{budget:6d} " + " ".join(
            f"{cells[m]['mean']:8.3f} +- {cells[m]['std']:.2f}" if m in cells else f"{'-':>15s}" for m in METHODS))
    report = {"patients": args.patients, "train_patients": n_train, "steps": args.steps, "seeds": args.seeds,
              "device": args.device, "machine": platform.processor() or platform.machine(),
              "method_config": str(CONFIG.name), "overrides": overrides,
              "summary": {str(b): v for b, v in summary.items()}, "rows": rows}
    (args.out / "sss_vs_supervised.json").write_text(json.dumps(report, indent=2))
    _plot(summary, args.out / "sss_vs_supervised.png")
    print(f"wrote {args.out / 'sss_vs_supervised.json'} and .png")


def summarize(rows: list[dict]) -> dict[int, dict[str, dict]]:
    """``{budget: {method: {"mean", "std", "runs", "per_class"}}}`` of the test mean Dice over seeds."""
    summary: dict[int, dict[str, dict]] = {}
    for budget in sorted({r["budget"] for r in rows}):
        for method in METHODS:
            runs = [r for r in rows if r["budget"] == budget and r["method"] == method]
            if runs:
                values = np.array([r["test_mean_dice"] for r in runs])
                per_class = {k: float(np.mean([r["test_dice_per_class"][k] for r in runs])) for k in NAMES}
                pseudo = {t: {key: float(np.mean([r["pseudo_label_calibration"][t][key] or 0.0 for r in runs]))
                              for key in ("coverage", "precision")}
                          for t in runs[0].get("pseudo_label_calibration", {})}
                summary.setdefault(budget, {})[method] = {"mean": float(values.mean()), "std": float(values.std()),
                                                          "runs": len(runs), "per_class": per_class,
                                                          "pseudo_labels": pseudo}
    return summary


def _plot(summary: dict[int, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(summary)
    width = 0.8 / len(METHODS)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, method in enumerate(METHODS):
        cells = [summary[b].get(method, {"mean": 0.0, "std": 0.0}) for b in budgets]
        ax.bar(np.arange(len(budgets)) + i * width, [c["mean"] for c in cells], width, label=method,
               yerr=[c["std"] for c in cells], capsize=3)
    ax.set_xticks(np.arange(len(budgets)) + width * (len(METHODS) - 1) / 2, [f"{b} labeled" for b in budgets])
    ax.set_ylabel("test mean Dice")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
