"""The README's main job, step by step through the CLI: phantoms -> check -> evaluate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.data.adapters import discover_cases
from medsam_kit.data.phantoms.predictions import perturb_label_map
from medsam_kit.io import read_volume


def test_quickstart_pipeline(tmp_path, capsys):
    raw, pred, out = tmp_path / "acdc", tmp_path / "pred", tmp_path / "eval"
    assert main(["phantoms", "acdc", "--out", str(raw), "--cases", "3", "--predictions", str(pred)]) == 0
    assert main(["check", "acdc", str(raw)]) == 0
    assert main(["evaluate", "--pred", str(pred), "--gt", str(raw), "--dataset", "acdc", "--out", str(out)]) == 0

    records = [r for r in discover_cases("acdc", raw) if r.labeled]
    assert len(records) == 6  # 3 patients x (ED, ES)
    for record in records:  # predictions sit on the ground truth's grid
        gt, prediction = read_volume(record.label_file), read_volume(pred / f"{record.case_id}.nii.gz")
        assert prediction.array.shape == gt.array.shape
        assert prediction.geometry.almost_equal(gt.geometry)
    with open(out / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 3 and {r["class"] for r in rows} == {"RV", "MYO", "LV"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    dice = [summary["classes"][name]["dice"]["mean"] for name in ("RV", "MYO", "LV")]
    # simulated errors are real but moderate: neither perfect nor broken
    assert all(0.5 < d < 0.99 for d in dice), dice
    assert (out / "metrics.png").stat().st_size > 10_000


def test_perturbation_is_deterministic_and_bounded():
    label = np.zeros((6, 40, 40), np.uint8)
    label[1:5, 10:30, 10:30] = 1
    label[1:5, 15:25, 15:25] = 2
    a = perturb_label_map(label, np.random.default_rng(3))
    b = perturb_label_map(label, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1, 2}
    assert np.array_equal(perturb_label_map(label, np.random.default_rng(3), severity=0.0), label)


def test_phantoms_rejects_bad_arguments(tmp_path, capsys):
    assert main(["phantoms", "acdc", "--out", str(tmp_path), "--cases", "0"]) == 2
    assert "cases" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantoms", "nosuchdataset", "--out", str(tmp_path)])


def test_phantoms_refuse_to_mix_runs(tmp_path, capsys):
    """A second run into the same folder must not leave cases of the first behind."""
    raw, pred = tmp_path / "acdc", tmp_path / "pred"
    assert main(["phantoms", "acdc", "--out", str(raw), "--cases", "3", "--predictions", str(pred)]) == 0
    assert main(["phantoms", "acdc", "--out", str(raw), "--cases", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["phantoms", "acdc", "--out", str(raw), "--cases", "2", "--predictions", str(pred),
                 "--overwrite"]) == 0
    patients = {r.meta["patient"] for r in discover_cases("acdc", raw)}
    assert len(patients) == 2
    assert len(list(pred.iterdir())) == 4  # 2 patients x (ED, ES), none of the earlier run's
