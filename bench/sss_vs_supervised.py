"""Benchmark: supervised-only vs SSS at 1, 3 and 7 labeled ACDC phantom patients, on two phantom styles.

    python bench/sss_vs_supervised.py [--styles A B] [--patients 20] [--steps N] [--seeds 3]
                                      [--budgets 1 7 all] [--methods supervised sss] [--set KEY=VALUE ...]
                                      [--jobs 1] [--device cpu] [--out bench/results]

Settings are chosen on phantom style A (``medsam_kit.data.phantoms.acdc``) and reported on style B as
well (``acdc_b``: an independently written generator with other anatomy, placement, contrast, noise and
confounders), so a number in the README is never one the settings were tuned on alone.

Same phantom data, split, tiny model and number of steps for every setting of a style; only the
method, the labeled budget and the seed change. The split is the ACDC protocol (70 / 10 / 20 % of the
patients for train / val / test); of the training patients the first 1, 3 or 7 keep their labels
(``all``: every training patient, the fully supervised reference) and the rest are the unlabeled
pool (SSS) or unused (supervised). The methods are the shipped configs'
(``configs/experiments/acdc_sss_1case.yaml``: its ``method`` section for ``sss``, ``dfe: false``
for ``sss_no_dfe``, and its labeled-loss keys under ``name: supervised``; its ``augment`` section for
all). Each run is scored on the test patients by what users get, ``predict --run``'s automatic
output (``refine="auto"``), and by the coarse head alone (its argmax, same preprocessing), as the
mean Dice over RV / MYO / LV and the test volumes; the table gives mean and standard deviation over
seeds (seed = model initialisation, sampling and augmentation; the data stay the same).
``--set KEY=VALUE`` changes a key of the SSS method section for both SSS settings.

Each run also records how good its final pseudo-labels are: the SSS teacher's (the supervised
model's) coarse labels of the unlabeled training patients against their hidden phantom labels, per
confidence threshold, the share of pixels kept and the share of those that are right
(``pseudo_label_calibration``).

Writes ``sss_vs_supervised.json`` (every run + the summary), ``sss_vs_supervised.jsonl`` (one line
per finished run, survives an interruption; ``--resume`` skips the runs it holds) and
``sss_vs_supervised.png`` and prints the table. ``--jobs N`` trains N settings at once (one process
each).
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

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "acdc_sss_1case.yaml"
METHODS = ("supervised", "sss_no_dfe", "sss")
NAMES = {"RV": (1,), "MYO": (2,), "LV": (3,)}
CALIBRATION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SCORES = ("auto", "coarse")  # what each run is scored by: predict's automatic output, the coarse head alone


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


def score_run(run_dir: Path, raw: str, case_ids: list[str], device: str = "cpu") -> dict[str, list[list[float]]]:
    """Per test volume, RV / MYO / LV Dice of ``predict --run``'s automatic output and of the coarse head alone."""
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.engine.metrics import class_metrics
    from medsam_kit.infer import Segmenter

    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    segmenter = Segmenter.from_run(run_dir, device=device)
    scores: dict[str, list[list[float]]] = {key: [] for key in SCORES}
    for case_id in case_ids:
        case = records[case_id].load()
        for key, refine in (("auto", "auto"), ("coarse", "none")):
            labels = segmenter.segment_volume(case.image, geometry=case.geometry, refine=refine).labels
            metrics = class_metrics(labels, case.label, NAMES, case.geometry.spacing_zyx, 2.0)
            scores[key].append([metrics[k]["dice"] for k in NAMES])
    return scores


def run_setting(style: str, raw: str, work: str, method: str, budget: int | str, n_train: int, steps: int,
                device: str, seed: int = 0, threads: int = 0, overrides: dict | None = None) -> dict:
    """Train one (style, method, budget, seed) setting and score it on the test patients."""
    from medsam_kit.engine.config import config_from_dict, load_config
    from medsam_kit.engine.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    base = load_config(CONFIG).to_dict()
    sss = {**base["method"], **(overrides or {})}
    base["method"] = {**method_section(method, sss), "seed": seed}  # prompt / view draws follow the seed too
    labeled = n_train if budget == "all" else int(budget)
    base["data"].update({"raw": raw, "prepared": None, "dataset": "acdc", "labeled_budget": labeled / n_train})
    base["train"].update({"steps": steps, "device": device, "seed": seed})
    config = config_from_dict(base, f"{method}@{budget}/seed{seed}/style{style}")
    run_dir = Path(work) / f"{style}_{method}_{budget}_seed{seed}"
    tic = time.perf_counter()
    trainer = Trainer(config, run_dir)
    result = trainer.fit(resume=(run_dir / "checkpoints" / "last.pt").is_file())  # an interrupted bench goes on
    seconds = time.perf_counter() - tic
    calibration = pseudo_label_calibration(trainer) if trainer.unlabeled_cases else {}
    split = json.loads((run_dir / "split.json").read_text())
    scores = score_run(run_dir, raw, split["test"], device)
    row = {"style": style, "method": method, "budget": budget, "seed": seed, "steps": steps,
           "overrides": overrides or {},
           "labeled_patients": sorted({c.split("_")[0] for c in split["train_labeled"]}),
           "unlabeled_volumes": len(split.get("train_unlabeled", [])), "train_seconds": round(seconds, 1),
           "best_val_dice": result.best_val_dice, "best_step": result.best_step,
           "pseudo_label_calibration": calibration}
    for key, values in scores.items():
        row[f"test_{key}_per_class"] = dict(zip(NAMES, np.mean(values, 0).tolist(), strict=True))
        row[f"test_{key}_dice"] = float(np.mean(values))
    return row


def _key(row: dict) -> tuple:
    return row["style"], row["method"], str(row["budget"]), row["seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", nargs="+", default=["A", "B"], help="phantom styles (default A B)")
    parser.add_argument("--patients", type=int, default=20, help="phantom patients per style (default 20: 11 train)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps of every run (default: the SSS config's train.steps)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per setting, seeds FIRST .. FIRST+N-1")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first seed (add seeds to an earlier invocation's without rerunning them)")
    parser.add_argument("--budgets", nargs="+", default=["1", "7", "all"],
                        help="labeled patients per run: numbers, or 'all' (default 1 7 all)")
    parser.add_argument("--methods", nargs="+", default=["supervised", "sss"], choices=METHODS,
                        help="settings to run ('all' budgets run supervised only)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the SSS method section (YAML value), repeatable")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per job (default: cores / jobs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in OUT/sss_vs_supervised.jsonl (same settings) and add the rest")
    parser.add_argument("--work", type=Path, default=None, help="folder for the phantoms and run folders "
                                                                "(default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    from medsam_kit.cli.train import parse_set_values

    try:  # keys of the method section: the same parsing as `medsam-kit train --set method.KEY=VALUE`
        parsed = parse_set_values([f"method.{item}" for item in args.set])
        overrides = {key.removeprefix("method."): value for key, value in parsed.items()}
    except ValueError as exc:
        parser.error(f"--set takes KEY=VALUE of the method section ({exc})")
    budgets = [b if b == "all" else int(b) for b in args.budgets]
    if args.steps is None:
        from medsam_kit.engine.config import load_config

        args.steps = load_config(CONFIG).train.steps

    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.phantoms import generate_phantoms
    from medsam_kit.data.splits import make_split

    work = args.work or Path(tempfile.mkdtemp(prefix="sss_bench_"))
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "sss_vs_supervised.jsonl"  # one line per finished setting (survives an interruption)
    rows = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()] \
        if args.resume and partial.is_file() else []
    if not args.resume:
        partial.write_text("")
    # rows of other settings (steps, --set) are not this benchmark's: kept in the file, left out of the table
    rows = [r for r in rows if r.get("steps", args.steps) == args.steps and r.get("overrides", {}) == overrides]
    done = {_key(r) for r in rows}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0)
    jobs, n_trains = [], {}
    for style in args.styles:
        raw = work / f"raw_{style}"
        if not raw.is_dir():
            generate_phantoms("acdc", raw, cases=args.patients, seed=0, style=style)
        # the protocol's training patients of this folder; a budget b is passed as the fraction b / n_train,
        # which the split turns back into exactly b patients (an int budget would be rescaled from ACDC's 70)
        full = make_split(get_adapter("acdc").discover(str(raw)), "acdc")
        n_train = n_trains[style] = len({c.split("_")[0] for c in full.train_labeled})
        for seed in seeds:
            for budget in budgets:
                for method in args.methods:
                    if budget == "all" and method != "supervised" or budget != "all" and budget >= n_train:
                        continue
                    if (style, method, str(budget), seed) not in done:
                        jobs.append((style, str(raw), str(work), method, budget, n_train, args.steps, args.device,
                                     seed, threads, overrides))
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_setting, *job) for job in jobs]
        for future in as_completed(futures):  # written as each run ends, not in submission order
            row = future.result()
            rows.append(row)
            with partial.open("a") as f:
                f.write(json.dumps(row) + "\n")
            calibration = row["pseudo_label_calibration"]
            print(f"style {row['style']} {row['method']:>10s} @ {row['budget']} labeled, seed {row['seed']}: test "
                  f"Dice auto {row['test_auto_dice']:.3f} / coarse {row['test_coarse_dice']:.3f} "
                  f"({row['train_seconds']:.0f} s)"
                  + ("; pseudo-labels kept / right at 0.8: "
                     f"{calibration['0.8']['coverage']:.0%} / {calibration['0.8']['precision'] or 0:.1%}"
                     if calibration else ""), flush=True)
    summary = summarize(rows)
    print("test mean Dice (automatic output / coarse head alone), mean +- std over seeds")
    for style, cells in summary.items():
        print(f"style {style}")
        for budget, methods in cells.items():
            print(f"  {budget:>4s} labeled: " + "; ".join(
                f"{m} {c['auto']['mean']:.3f} +- {c['auto']['std']:.2f} / {c['coarse']['mean']:.3f} ({c['runs']})"
                for m, c in methods.items()))
    report = {"patients": args.patients, "train_patients": n_trains, "steps": args.steps, "seeds": args.seeds,
              "device": args.device, "machine": platform.processor() or platform.machine(),
              "method_config": str(CONFIG.name), "overrides": overrides, "summary": summary, "rows": rows}
    (args.out / "sss_vs_supervised.json").write_text(json.dumps(report, indent=2))
    _plot(summary, args.out / "sss_vs_supervised.png")
    print(f"wrote {args.out / 'sss_vs_supervised.json'} and .png")


def summarize(rows: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """``{style: {budget: {method: {"auto": {mean, std}, "coarse": {...}, "runs", "per_class", "seeds"}}}}``."""
    summary: dict[str, dict[str, dict[str, dict]]] = {}
    budget_order = lambda b: (b == "all", int(b) if b != "all" else 0)  # noqa: E731
    for style in sorted({r["style"] for r in rows}):
        for budget in sorted({str(r["budget"]) for r in rows if r["style"] == style}, key=budget_order):
            for method in METHODS:
                runs = [r for r in rows if r["style"] == style and str(r["budget"]) == budget and r["method"] == method]
                if not runs:
                    continue
                cell: dict = {"runs": len(runs), "seeds": [r["seed"] for r in runs]}
                for key in SCORES:
                    values = np.array([r[f"test_{key}_dice"] for r in runs])
                    cell[key] = {"mean": float(values.mean()), "std": float(values.std()),
                                 "values": [round(float(v), 4) for v in values]}
                cell["per_class"] = {k: float(np.mean([r["test_auto_per_class"][k] for r in runs])) for k in NAMES}
                summary.setdefault(style, {}).setdefault(budget, {})[method] = cell
    return summary


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = list(summary)
    fig, axes = plt.subplots(1, len(styles), figsize=(6 * len(styles), 3.5), squeeze=False)
    for ax, style in zip(axes[0], styles, strict=True):
        cells = summary[style]
        budgets = list(cells)
        width = 0.8 / len(METHODS)
        for i, method in enumerate(METHODS):
            values = [cells[b].get(method, {}).get("auto", {"mean": 0.0, "std": 0.0}) for b in budgets]
            ax.bar(np.arange(len(budgets)) + i * width, [v["mean"] for v in values], width, label=method,
                   yerr=[v["std"] for v in values], capsize=3)
        ax.set_xticks(np.arange(len(budgets)) + width * (len(METHODS) - 1) / 2, [f"{b} labeled" for b in budgets])
        ax.set(ylabel="test mean Dice (automatic output)", ylim=(0, 1), title=f"phantom style {style}")
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
