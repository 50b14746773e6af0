"""The main job on built-in synthetic data: ``medsam-kit demo`` (and :func:`run_demo` from Python).

One call, CPU, no downloads: ACDC phantoms in the real ACDC layout -> training with the demo's
experiment config (semi-supervised SSS on a small labeled budget plus unlabeled patients, tiny
SAM-2.1 model) -> automatic segmentation of the split's held-out *test* patients -> evaluation
against their ground truth -> a report in the output folder::

    OUT/data/                 the phantom dataset (raw ACDC layout)
    OUT/run/                  the training run (config, split, checkpoints, metrics.jsonl, progress.png)
    OUT/predictions/          <case>.nii.gz (+ .json sidecar) on each input's grid
    OUT/ground_truth/         the held-out cases' reference labels
    OUT/evaluation/           metrics.csv, summary.json, metrics.png
    OUT/overlays/             <case>.png: prediction (top) vs ground truth (bottom)
    OUT/progress.png          training losses and validation Dice (copied from the run)
    OUT/summary.json          Dice / HD95 per structure, wall time, the commands for real ACDC
    OUT/REPORT.md             the same as a readable page

The library does the work and reports progress through ``progress(stage, done, total)``; the CLI
draws the bars and prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "experiments"
DEFAULT_CONFIG = CONFIGS / "acdc_sss_3cases.yaml"
STRUCTURES = ("RV", "MYO", "LV")

Progress = Callable[[str, int, int], None]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out: the output folder.
        table: ``{structure: {"dice": mean, "hd95_mm": mean}}`` over the held-out cases.
        mean_dice: mean of the structures' Dice.
        seconds: wall time per stage and in total.
        commands: the same pipeline as shell commands for a real ACDC folder.
    """

    out: Path
    table: dict[str, dict[str, float]]
    mean_dice: float
    seconds: dict[str, float] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def _real_data_commands(config: Path) -> list[str]:
    name = config.name
    return [
        "medsam-kit check acdc /path/to/ACDC/database",
        f"medsam-kit train --config configs/experiments/{name} --data /path/to/ACDC/database --out runs/acdc_sss",
        "medsam-kit predict --run runs/acdc_sss --input /path/to/new_volumes --output predictions --overlay",
        "medsam-kit evaluate --pred predictions --gt /path/to/ACDC/database --dataset acdc --subset testing",
    ]


def run_demo(out: str | os.PathLike, *, config: str | os.PathLike = DEFAULT_CONFIG, cases: int = 10,
             steps: int | None = None, device: str = "cpu", seed: int = 0, overwrite: bool = False,
             progress: Progress | None = None, trainer_callbacks=()) -> DemoResult:
    """Run the whole demo (module docstring) into ``out``.

    Args:
        out: output folder; must be empty or absent unless ``overwrite``.
        config: experiment config (an ACDC config; the SSS 3-patient budget by default).
        cases: phantom patients (the ACDC protocol splits them 70 / 10 / 20 into train / val / test).
        steps: optimizer steps (default: the config's).
        device: torch device for training and inference.
        seed: phantom seed.
        overwrite: replace the contents of a non-empty ``out``.
        progress: ``progress(stage, done, total)`` for the phantom, predict and evaluate stages.
        trainer_callbacks: :class:`~medsam_kit.engine.trainer.Trainer` callbacks (e.g. a progress bar).
    """
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.phantoms import generate_phantoms
    from medsam_kit.engine.config import load_config
    from medsam_kit.engine.evaluation import evaluate_folders
    from medsam_kit.engine.trainer import Trainer
    from medsam_kit.infer import Segmenter, write_overlay, write_result

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    config = Path(config)
    seconds: dict[str, float] = {}
    report = progress or (lambda stage, done, total: None)
    start = time.perf_counter()

    tic = time.perf_counter()
    report("phantoms", 0, 1)
    raw = generate_phantoms("acdc", out / "data", cases=cases, seed=seed)
    report("phantoms", 1, 1)
    seconds["phantoms"] = time.perf_counter() - tic

    tic = time.perf_counter()
    overrides = {"data.raw": str(raw), "data.prepared": None, "data.dataset": "acdc", "train.device": device}
    if steps is not None:
        overrides["train.steps"] = int(steps)
    experiment = load_config(config, overrides)
    trainer = Trainer(experiment, out / "run", callbacks=list(trainer_callbacks))
    trainer.fit()
    seconds["train"] = time.perf_counter() - tic

    tic = time.perf_counter()
    split = json.loads((out / "run" / "split.json").read_text(encoding="utf-8"))
    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    held_out = [records[c] for c in split["test"]]
    segmenter = Segmenter.from_run(out / "run", device=device)
    names = {int(k): v for k, v in segmenter.label_names.items()}
    for i, record in enumerate(held_out):
        report("predict", i, len(held_out))
        case = record.load()
        result = segmenter.segment_volume(case.image, geometry=case.geometry)
        write_result(out / "predictions" / f"{record.case_id}.nii.gz", result)
        # flat ground-truth folder of the held-out cases only (the raw root also holds training patients)
        (out / "ground_truth").mkdir(exist_ok=True)
        shutil.copy(record.label_file, out / "ground_truth" / f"{record.case_id}_gt.nii.gz")
        write_overlay(out / "overlays" / f"{record.case_id}.png", case.image[0], result.labels, names,
                      reference=case.label)
    report("predict", len(held_out), len(held_out))
    seconds["predict"] = time.perf_counter() - tic

    tic = time.perf_counter()
    evaluation = evaluate_folders(out / "predictions", out / "ground_truth", "acdc", out / "evaluation",
                                  progress=lambda done, total: report("evaluate", done, total))
    seconds["evaluate"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - start
    summary = json.loads((out / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    table = {s: {"dice": summary["classes"][s]["dice"]["mean"], "hd95_mm": summary["classes"][s]["hd95_mm"]["mean"]}
             for s in STRUCTURES}
    mean_dice = sum(row["dice"] for row in table.values()) / len(table)
    if (out / "run" / "progress.png").is_file():
        shutil.copy(out / "run" / "progress.png", out / "progress.png")
    commands = _real_data_commands(config)
    result = DemoResult(out, table, mean_dice, {k: round(v, 1) for k, v in seconds.items()}, commands)
    _write_report(result, experiment, split, evaluation)
    return result


def _write_report(result: DemoResult, experiment, split: dict, evaluation) -> None:
    out = result.out
    data = {
        "config": experiment.name, "method": experiment.method.get("name"), "model": experiment.model.name,
        "steps": experiment.train.steps,
        "labeled_patients": sorted({c.split("_")[0] for c in split["train_labeled"]}),
        "unlabeled_patients": sorted({c.split("_")[0] for c in split.get("train_unlabeled", [])}),
        "test_cases": split["test"], "per_structure": result.table, "mean_dice": result.mean_dice,
        "seconds": result.seconds, "real_acdc_commands": result.commands,
    }
    (out / "summary.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    rows = "\n".join(f"| {s} | {v['dice']:.3f} | {v['hd95_mm']:.1f} |" for s, v in result.table.items())
    text = f"""# medsam-kit demo report

Config `{data['config']}` (method `{data['method']}`, model `{data['model']}`, {data['steps']} steps);
labeled patients {', '.join(data['labeled_patients'])}; unlabeled {len(data['unlabeled_patients'])} patients.
Automatic segmentation of the held-out test cases {', '.join(data['test_cases'])}:

| structure | Dice | HD95 (mm) |
|---|---|---|
{rows}
| mean | {result.mean_dice:.3f} | |

Wall time: {result.seconds.get('total', 0):.0f} s (training {result.seconds.get('train', 0):.0f} s).
Files: `progress.png` (training), `overlays/` (prediction top, ground truth bottom), `evaluation/metrics.csv`.

The same on real ACDC:

```bash
{chr(10).join(result.commands)}
```
"""
    (out / "REPORT.md").write_text(text, encoding="utf-8")
