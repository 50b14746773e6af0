"""End to end on ACDC phantoms, through the CLI: train the shipped config, then segment held-out patients.

``medsam-kit train --config configs/experiments/acdc_supervised.yaml`` on 10 phantom patients (tiny
SAM-2.1 Hiera, 128 px, 1500 steps: about 3.5 min on 2 CPU cores), then ``medsam-kit predict`` on
the split's *test* patients (never seen in training or checkpoint selection) and
``medsam-kit evaluate`` against their ground truth.

Floors, and why: measured on this test's run (held-out ED + ES of the 2 test patients, 2 CPU
cores, 2026-11) prompted mean Dice 0.80 (RV 0.85 / MYO 0.74 / LV 0.82) with one ground-truth box
per class on one slice, automatic 0.80 (0.85 / 0.74 / 0.81); the worst single case-class score
was 0.67. Re-measured 2026-12 with validation every 500 steps and automatic ``refine="auto"``:
prompted 0.81 (0.86 / 0.72 / 0.84), automatic 0.82 (0.91 / 0.75 / 0.80).
The floors sit 0.08-0.10 below the means: far above what unguided box propagation
reached before (0.35 prompted / 0.40 automatic on the same kind of run) or a global threshold
reaches on these phantoms (LV 0.31-0.70), and loose enough for differences of CPU kernels
between machines. A per-class floor catches a structure that is lost while the mean looks fine.

Marked slow (about 5 min; `make test-all`): the default suite's end-to-end smoke test is
``tests/test_demo.py`` (phantoms -> SSS training -> automatic segmentation -> evaluation through the CLI,
a few steps), and ``tests/infer/test_refine.py`` checks held-out automatic output against the coarse head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.data.adapters import get_adapter
from medsam_kit.prompts import prompt_set_from_labels
from medsam_kit.prompts.from_masks import MaskPromptConfig
from medsam_kit.prompts.user_file import dump_prompt_file

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "acdc_supervised.yaml"
NAMES = {1: "RV", 2: "MYO", 3: "LV"}
MEAN_FLOOR = {"prompted": 0.72, "automatic": 0.70}
CLASS_FLOOR = 0.5


def _train(phantom_factory, tmp_path_factory) -> Path:
    raw = phantom_factory("acdc", cases=10)
    run = tmp_path_factory.mktemp("e2e") / "run"
    # Validation of all three modes every 500 steps, not 250 + at start: the default suite stays under 10 min.
    assert main(["train", "--config", str(CONFIG), "--data", str(raw), "--out", str(run), "--device", "cpu",
                 "--set", "train.val_every=500", "--set", "train.validate_at_start=false"]) == 0
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    held_out = [records[c] for c in split["test"]]
    assert held_out and not set(split["test"]) & set(split["train_labeled"] + split["val"])
    work = run.parent
    (work / "images").mkdir()
    (work / "gt").mkdir()
    (work / "prompts").mkdir()
    for record in held_out:
        shutil.copy(record.image_files[0], work / "images" / f"{record.case_id}.nii.gz")
        shutil.copy(record.label_file, work / "gt" / f"{record.case_id}_gt.nii.gz")
        case = record.load()
        tight = MaskPromptConfig(box=True, jitter_px=0.0, jitter_frac=0.0, n_positive=0)
        prompts = prompt_set_from_labels(case.label, slices="largest", config=tight)
        dump_prompt_file(work / "prompts" / f"{record.case_id}.json", prompts, NAMES)
    return run


def _segment_and_score(run: Path, mode: str) -> dict:
    work = run.parent
    out = work / f"pred_{mode}"
    argv = ["predict", "--run", str(run), "--input", str(work / "images"), "--output", str(out)]
    if mode == "prompted":
        argv += ["--prompts", str(work / "prompts")]
    assert main(argv) == 0
    for sidecar in out.glob("*.json"):
        assert json.loads(sidecar.read_text(encoding="utf-8"))["mode"] == mode
    assert main(["evaluate", "--pred", str(out), "--gt", str(work / "gt"), "--dataset", "acdc",
                 "--out", str(work / f"eval_{mode}")]) == 0
    return json.loads((work / f"eval_{mode}" / "summary.json").read_text(encoding="utf-8"))


def _class_means(summary: dict) -> dict[str, float]:
    return {name: summary["classes"][name]["dice"]["mean"] for name in NAMES.values()}


@pytest.mark.slow
def test_trained_run_segments_held_out_patients_above_the_floors(phantom_factory, tmp_path_factory):
    # One test, not three sharing a module fixture: pytest-xdist would train once per worker.
    run = _train(phantom_factory, tmp_path_factory)
    metrics_text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    val = [json.loads(line) for line in metrics_text.splitlines() if '"val"' in line]
    assert max(v["val_dice"] for v in val) > 0.75
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "progress.png").is_file()
    for mode in ("prompted", "automatic"):
        per_class = _class_means(_segment_and_score(run, mode))
        mean = float(np.mean(list(per_class.values())))
        print(f"{mode}: mean Dice {mean:.3f}", {k: round(v, 3) for k, v in per_class.items()})  # shown with -s
        assert mean >= MEAN_FLOOR[mode], (mode, per_class)
        assert min(per_class.values()) >= CLASS_FLOOR, (mode, per_class)
