"""``medsam-kit demo``: the whole pipeline into one folder (a short run here; quality is asserted elsewhere)."""

from __future__ import annotations

import json

from medsam_kit.cli.main import main


def test_demo_writes_the_report_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cases", "5", "--steps", "6"]) == 0
    printed = capsys.readouterr().out
    for name in ("RV", "MYO", "LV", "mean", "REPORT.md"):
        assert name in printed
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["method"] == "sss" and summary["steps"] == 6
    assert set(summary["per_structure"]) == {"RV", "MYO", "LV"}
    assert summary["labeled_patients"] and summary["unlabeled_patients"]
    assert not set(summary["labeled_patients"]) & set(summary["unlabeled_patients"])
    tests = summary["test_cases"]
    assert tests and all((out / "predictions" / f"{c}.nii.gz").is_file() for c in tests)
    assert all((out / "overlays" / f"{c}.png").read_bytes()[:4] == b"\x89PNG" for c in tests)
    assert (out / "progress.png").is_file() and (out / "evaluation" / "metrics.csv").is_file()
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "medsam-kit train --config configs/experiments/" in report and "| LV |" in report
    assert summary["seconds"]["total"] > 0


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data", encoding="utf-8")
    assert main(["demo", "--out", str(tmp_path), "--cases", "5", "--steps", "1"]) == 2  # one-line error
    assert (tmp_path / "keep.txt").is_file()
