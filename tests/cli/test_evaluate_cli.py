"""``medsam-kit evaluate``: exit codes, printed table, outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

GEOMETRY = Geometry(spacing=(1.0, 1.0, 2.5), origin=(5.0, -3.0, 0.0))


@pytest.fixture
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for k in range(2):
        labels = np.zeros((5, 16, 16), np.uint8)
        labels[1:4, 3 + k:12, 3:12] = 2
        labels[1:4, 5 + k:9, 5:9] = 3
        labels[1:4, 12:15, 4:8] = 1
        write_volume(gt_dir / f"patient00{k}_frame01_gt.nii.gz", Volume(labels, GEOMETRY))
        write_volume(pred_dir / f"patient00{k}_frame01.nii.gz", Volume(labels, GEOMETRY))
    return gt_dir, pred_dir


def test_complete_evaluation_exits_0_and_prints_the_table(folders, tmp_path, capsys):
    gt_dir, pred_dir = folders
    out = tmp_path / "out"
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc",
                 "--out", str(out), "--nsd-tolerance", "1.5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "2/2 cases scored" in printed and "NSD tolerance 1.5 mm" in printed
    table = {line.split()[0]: line for line in printed.splitlines() if line.split()}
    for name in ("RV", "MYO", "LV"):
        assert "1.000 ± 0.000" in table[name]
    assert str(out / "metrics.csv") in printed and str(out / "summary.json") in printed
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["nsd_tolerance_mm"] == 1.5 and summary["cases"]["scored"] == 2


def test_missing_case_exits_1_and_still_writes_outputs(folders, capsys):
    gt_dir, pred_dir = folders
    (pred_dir / "patient001_frame01.nii.gz").unlink()
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc"])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing predictions (1): patient001_frame01" in captured.err
    default_out = pred_dir / "evaluation"
    metrics_csv = (default_out / "metrics.csv").read_text(encoding="utf-8")
    assert metrics_csv.count("\n") == 1 + 2 * 3  # header + cases x classes
    assert json.loads((default_out / "summary.json").read_text(encoding="utf-8"))["missing"] == ["patient001_frame01"]


def test_geometry_mismatch_exits_1(folders, capsys):
    gt_dir, pred_dir = folders
    labels = np.zeros((5, 16, 16), np.uint8)
    write_volume(pred_dir / "patient000_frame01.nii.gz", Volume(labels, Geometry(spacing=(1.0, 1.0, 3.0))))
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc"]) == 1
    assert "geometry differs" in capsys.readouterr().err


def test_unusable_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "nope"),
                 "--dataset", "acdc"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope" in err


def test_help_documents_exit_codes_and_pairing(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "exit status" in text and "_gt" in text and "--nsd-tolerance" in text


def test_table_shows_across_classes_and_pooled_rows(folders, tmp_path, capsys):
    gt_dir, pred_dir = folders
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc",
                 "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("across classes") and "1.000 ± 0.000" in line for line in lines)
    assert any(line.startswith("pooled") and "1.000 ± 0.000" in line for line in lines)


def test_unreadable_ground_truth_exits_1_and_still_writes_outputs(folders, tmp_path, capsys):
    gt_dir, pred_dir = folders
    (gt_dir / "patient001_frame01_gt.nii.gz").write_bytes(b"garbage")
    out = tmp_path / "out"
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "unreadable ground truth: patient001_frame01:" in err and "Traceback" not in err
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["cases"]["unreadable_gt"] == 1


def test_raw_root_with_one_broken_case_exits_1_and_scores_the_rest(phantom_factory, tmp_path, capsys):
    root = tmp_path / "acdc"
    shutil.copytree(phantom_factory("acdc"), root)
    info = next(root.rglob("Info.cfg"))
    info.unlink()
    (tmp_path / "pred").mkdir()
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(root), "--dataset", "acdc"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"unreadable ground truth: {info.parent.name}: {info}" in err


def test_raw_root_with_every_case_broken_exits_2_with_the_adapters_message(phantom_factory, tmp_path, capsys):
    root = tmp_path / "acdc"
    shutil.copytree(phantom_factory("acdc"), root)
    for info in root.rglob("Info.cfg"):
        info.unlink()
    (tmp_path / "pred").mkdir()
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(root), "--dataset", "acdc"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Info.cfg" in err and "no ground truth" not in err


@pytest.mark.parametrize("breakage", ["garbage prediction", "stray files", "empty predictions",
                                      "prediction is a folder", "out is a file", "negative tolerance",
                                      "gt is a file", "empty gt"])
def test_bad_inputs_never_show_a_traceback(breakage, folders, tmp_path, capsys):
    gt_dir, pred_dir = folders
    extra = []
    expected = 1
    if breakage == "garbage prediction":
        (pred_dir / "patient000_frame01.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    elif breakage == "stray files":
        (pred_dir / "README.txt").write_text("notes", encoding="utf-8")
        (pred_dir / "scores.csv").write_text("a,b\n", encoding="utf-8")
        (pred_dir / "sub").mkdir()
        expected = 0
    elif breakage == "empty predictions":
        shutil.rmtree(pred_dir)
        pred_dir.mkdir()
    elif breakage == "prediction is a folder":
        (pred_dir / "patient000_frame01.nii.gz").unlink()
        (pred_dir / "patient000_frame01.nii.gz").mkdir()
    elif breakage == "out is a file":
        (tmp_path / "taken").write_text("x", encoding="utf-8")
        extra, expected = ["--out", str(tmp_path / "taken")], 2
    elif breakage == "negative tolerance":
        extra, expected = ["--nsd-tolerance", "-1"], 2
    elif breakage == "gt is a file":
        gt_dir, expected = gt_dir / "patient000_frame01_gt.nii.gz", 2
    elif breakage == "empty gt":
        gt_dir, expected = tmp_path / "empty", 2
        gt_dir.mkdir()
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--dataset", "acdc", *extra])
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err
    if expected == 2:
        assert err.count("\n") == 1 and err.startswith("medsam-kit evaluate: error: ")


def test_help_states_the_distance_and_region_policies(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "image diagonal in mm" in text and "n_nan" in text and "can never improve a mean" in text
    assert "regions only" in text and "brats2021" in text and "plain .tif/.png/.h5 stores none" in text


def _brats_case(tmp_path, et: int) -> None:
    labels = np.zeros((8, 12, 12), np.uint8)
    labels[2:6, 2:10, 2:10] = 2
    labels[3:5, 4:8, 4:8] = 1
    labels[3:5, 8:10, 4:8] = et
    for folder, name in (("gt", "BraTS-GLI-00007-000-seg"), ("pred", "BraTS-GLI-00007-000")):
        write_volume(tmp_path / folder / f"{name}.nii.gz", Volume(labels, Geometry()))


def test_brats_2021_labels_given_as_brats_exit_2_naming_the_right_dataset(tmp_path, capsys):
    _brats_case(tmp_path, et=4)
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--dataset", "brats"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.rstrip().endswith("use --dataset brats2021")


def test_brats_table_names_the_region_rows_and_explains_nan(tmp_path, capsys):
    _brats_case(tmp_path, et=3)
    pred = tmp_path / "pred" / "BraTS-GLI-00007-000.nii.gz"
    labels = np.asarray(read_volume(pred).array)
    labels[labels == 1] = 0  # NCR not found: its HD95 is undefined
    write_volume(pred, Volume(labels, Geometry()))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--dataset", "brats",
                 "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("across regions") for line in lines)
    assert any(line.startswith("pooled regions") for line in lines)
    assert not any(line.startswith("across classes") for line in lines)
    assert any(line.startswith("overall rows: regions WT, TC, ET only") for line in lines)
    ncr = next(line for line in lines if line.startswith("NCR"))
    assert "(1 nan)" in ncr and any("counted in mean/std as the ground-truth image diagonal" in line
                                    for line in lines)
