"""evaluate_folders on small folders written with write_volume: pairing, failures, outputs."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.case import case_file_stem
from medsam_kit.engine.evaluation import CSV_COLUMNS, evaluate_folders
from medsam_kit.engine.metrics import class_metrics
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

# ACDC-like short-axis grid: 1.5 mm in plane, 8 mm slices, oblique origin.
GEOMETRY = Geometry(spacing=(1.5, 1.5, 8.0), origin=(-40.0, 12.5, 3.0),
                    direction=((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
SHAPE = (6, 24, 28)
CASES = ("patient001_frame01", "patient001_frame12", "patient002_frame01")
# Worst-case distance of that grid: its extent (8 * 6, 1.5 * 24, 1.5 * 28) mm, corner to corner.
DIAGONAL_MM = math.sqrt(48.0**2 + 36.0**2 + 42.0**2)


def _heart(seed: int) -> np.ndarray:
    """Labels 0 bg, 1 RV, 2 MYO, 3 LV: a ring (MYO) around a disc (LV) beside a blob (RV)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    cy, cx = 12 + rng.integers(-2, 3), 16 + rng.integers(-2, 3)
    r = np.hypot(y - cy, x - cx)
    labels = np.zeros(SHAPE, np.uint8)
    inside = (z >= 1) & (z <= 4)
    labels[inside & (r < 7)] = 2
    labels[inside & (r < 4)] = 3
    labels[inside & (np.hypot(y - cy, x - cx + 10) < 4) & (labels == 0)] = 1
    return labels


@pytest.fixture
def acdc_flat(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A flat ground-truth folder with ACDC ``_gt`` names and a folder of perfect predictions."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    labels = {case_id: _heart(i) for i, case_id in enumerate(CASES)}
    for case_id, array in labels.items():
        write_volume(gt_dir / f"{case_id}_gt.nii.gz", Volume(array, GEOMETRY))
        write_volume(pred_dir / f"{case_id}.nii.gz", Volume(array, GEOMETRY))
    return gt_dir, pred_dir, labels


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _strict_json(path: Path) -> dict:
    def reject(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def test_perfect_predictions_score_one_and_write_all_outputs(acdc_flat, tmp_path):
    gt_dir, pred_dir, _ = acdc_flat
    calls = []
    result = evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=tmp_path / "out",
                              progress=lambda done, total: calls.append((done, total)))
    assert result.complete and not result.unmatched
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.classes == {"RV": (1,), "MYO": (2,), "LV": (3,)}
    assert result.nsd_tolerance_mm == 2.0
    rows = _read_csv(result.files["csv"])
    assert len(rows) == len(CASES) * 3
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["case_id"] for r in rows} == set(CASES)
    assert all((float(r["dice"]), float(r["hd95_mm"]), float(r["nsd"])) == (1.0, 0.0, 1.0) for r in rows)
    assert all(r["status"] == "ok" and r["gt_voxels"] == r["pred_voxels"] for r in rows)
    summary = _strict_json(result.files["summary"])
    assert summary["cases"] == {"ground_truth": 3, "scored": 3, "missing": 0, "mismatched": 0,
                                "unreadable": 0, "unreadable_gt": 0, "unmatched": 0}
    assert summary["classes"]["LV"]["dice"] == {"mean": 1.0, "std": 0.0, "median": 1.0, "n": 3, "n_nan": 0}
    assert summary["overall"]["across_classes"]["dice"] == {"mean": 1.0, "std": 0.0, "median": 1.0, "n": 3,
                                                           "n_nan": 0}
    assert summary["overall"]["pooled"]["dice"] == {"mean": 1.0, "std": 0.0, "median": 1.0, "n": 9, "n_nan": 0}
    assert summary["dataset"] == "acdc" and summary["nsd_tolerance_mm"] == 2.0
    assert result.files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_imperfect_prediction_values_match_class_metrics(acdc_flat):
    gt_dir, pred_dir, labels = acdc_flat
    case_id = CASES[1]
    pred = np.roll(labels[case_id], 2, axis=2)  # 3 mm shift in x
    pred[pred == 1] = 0  # RV not found: HD95 undefined for that class
    write_volume(pred_dir / f"{case_id}.nii.gz", Volume(pred, GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc", nsd_tolerance_mm=1.0)
    expected = class_metrics(pred, labels[case_id], result.classes, GEOMETRY.spacing_zyx, 1.0)
    rows = {r["class"]: r for r in result.rows if r["case_id"] == case_id}
    for name, values in expected.items():
        for metric in ("dice", "iou", "nsd", "gt_voxels", "pred_voxels"):
            assert rows[name][metric] == pytest.approx(values[metric], abs=1e-9)
    assert 0 < rows["LV"]["dice"] < 1 and rows["LV"]["hd95_mm"] == pytest.approx(3.0, abs=1e-6)
    assert math.isnan(rows["RV"]["hd95_mm"]) and rows["RV"]["max_distance_mm"] == pytest.approx(DIAGONAL_MM)
    rv = result.summary["classes"]["RV"]  # the undefined HD95 counts as the image diagonal
    assert rv["hd95_mm"]["n_nan"] == 1 and rv["hd95_mm"]["n"] == 3
    assert rv["hd95_mm"]["mean"] == pytest.approx(DIAGONAL_MM / 3)
    assert rv["dice"]["mean"] == pytest.approx(2 / 3) and rv["dice"]["n_nan"] == 0


def test_missing_unmatched_and_mismatched_cases_are_reported_and_scored_as_failures(acdc_flat, tmp_path):
    gt_dir, pred_dir, labels = acdc_flat
    (pred_dir / f"{CASES[0]}.nii.gz").unlink()  # missing
    write_volume(pred_dir / "patient099_frame01.nii.gz", Volume(labels[CASES[1]], GEOMETRY))  # unmatched
    moved = Geometry(GEOMETRY.spacing, (-40.0, 12.5, 3.5), GEOMETRY.direction)  # origin 0.5 mm off in z
    write_volume(pred_dir / f"{CASES[2]}.nii.gz", Volume(labels[CASES[2]], moved))
    result = evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=tmp_path / "out")
    assert not result.complete
    assert result.missing == [CASES[0]]
    assert result.unmatched == ["patient099_frame01"]
    assert list(result.mismatched) == [CASES[2]]
    assert "origin" in result.mismatched[CASES[2]] and f"{CASES[2]}.nii.gz" in result.mismatched[CASES[2]]
    rows = _read_csv(result.files["csv"])
    assert len(rows) == 3 * 3  # every ground-truth case x class, failures included
    status = {r["case_id"]: r["status"] for r in rows}
    assert status == {CASES[0]: "missing", CASES[1]: "ok", CASES[2]: "mismatch"}
    failed = [r for r in rows if r["status"] != "ok"]
    assert all(float(r["dice"]) == 0.0 and math.isnan(float(r["hd95_mm"])) for r in failed)
    summary = _strict_json(result.files["summary"])
    assert summary["missing"] == [CASES[0]] and summary["unmatched"] == ["patient099_frame01"]
    assert summary["cases"]["scored"] == 1 and summary["cases"]["missing"] == 1
    assert summary["classes"]["LV"]["dice"]["mean"] == pytest.approx(1 / 3)
    lv_hd95 = summary["classes"]["LV"]["hd95_mm"]  # failures count as the image diagonal
    assert (lv_hd95["n"], lv_hd95["n_nan"]) == (3, 2) and lv_hd95["median"] == pytest.approx(DIAGONAL_MM)
    assert lv_hd95["mean"] == pytest.approx(2 * DIAGONAL_MM / 3)
    assert all(float(r["max_distance_mm"]) == pytest.approx(DIAGONAL_MM) for r in rows)


def test_shape_mismatch_and_unreadable_prediction(acdc_flat):
    gt_dir, pred_dir, labels = acdc_flat
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(labels[CASES[0]][:, :20], GEOMETRY))
    (pred_dir / f"{CASES[1]}.nii.gz").write_bytes(b"not a nifti file")
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert "shape (6, 20, 28)" in result.mismatched[CASES[0]]
    assert list(result.unreadable) == [CASES[1]]
    assert {r["status"] for r in result.rows if r["case_id"] == CASES[1]} == {"unreadable"}


def test_label_values_outside_the_dataset_are_reported(acdc_flat):
    gt_dir, pred_dir, labels = acdc_flat
    pred = labels[CASES[0]].copy()
    pred[0, 0, 0] = 7
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(pred, GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert list(result.invalid_labels) == [CASES[0]] and "[7]" in result.invalid_labels[CASES[0]]
    assert not result.complete
    assert all(r["dice"] == 1.0 for r in result.rows)  # still scored; 7 belongs to no class


def test_brats_regions_and_seg_suffix(tmp_path):
    labels = np.zeros((12, 16, 16), np.uint8)
    labels[3:9, 3:13, 3:13] = 2
    labels[5:7, 6:10, 6:10] = 1
    labels[5:7, 10:12, 6:10] = 3
    geometry = Geometry(spacing=(1.0, 1.0, 1.0))
    write_volume(tmp_path / "gt" / "BraTS-GLI-00001-000-seg.nii.gz", Volume(labels, geometry))
    pred = labels.copy()
    pred[pred == 3] = 1
    write_volume(tmp_path / "pred" / "BraTS-GLI-00001-000.nii.gz", Volume(pred, geometry))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "brats", out_dir=tmp_path / "out")
    dice = {r["class"]: r["dice"] for r in result.rows}
    assert list(dice) == ["NCR", "ED", "ET", "WT", "TC"]
    assert dice["WT"] == dice["TC"] == dice["ED"] == 1.0 and dice["ET"] == 0.0
    assert result.summary["classes"]["WT"]["labels"] == [1, 2, 3]


def test_outputs_written_into_the_prediction_folder_are_not_read_as_predictions(acdc_flat):
    gt_dir, pred_dir, _ = acdc_flat
    evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=pred_dir)
    again = evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=pred_dir)
    assert again.unmatched == [] and again.complete
    assert not [p for p in pred_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bad_arguments_raise(acdc_flat, tmp_path):
    gt_dir, pred_dir, _ = acdc_flat
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate_folders(pred_dir, gt_dir, "kits")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_folders(tmp_path / "nowhere", gt_dir, "acdc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        evaluate_folders(pred_dir, tmp_path / "empty", "acdc")
    with pytest.raises(ValueError, match="subset"):
        evaluate_folders(pred_dir, gt_dir, "acdc", subset="testing")
    shutil.copy(gt_dir / f"{CASES[0]}_gt.nii.gz", gt_dir / f"{CASES[0]}.nii.gz")
    with pytest.raises(ValueError, match="both give case id"):
        evaluate_folders(pred_dir, gt_dir, "acdc")


# ------------------------------------------------------------------ raw dataset roots (adapters)
def _predict_from_ground_truth(records, pred_dir: Path) -> None:
    for record in records:
        case = record.load()
        write_volume(pred_dir / f"{case_file_stem(case.case_id)}.nii.gz", Volume(case.label, case.geometry))


# BraTS phantoms take ~10 s to generate; its regions are covered by the flat-folder test above.
@pytest.mark.parametrize("dataset", ["acdc", pytest.param("brats", marks=pytest.mark.slow), "em"])
def test_raw_root_through_the_adapter(dataset, phantom_factory, tmp_path):
    adapter = get_adapter(dataset)
    root = phantom_factory(dataset)
    records = [r for r in adapter.discover(root) if r.labeled]
    _predict_from_ground_truth(records[1:], tmp_path / "pred")
    result = evaluate_folders(tmp_path / "pred", root, dataset)
    assert result.missing == [records[0].case_id]
    assert not result.mismatched and not result.invalid_labels and not result.unmatched
    scored = [r for r in result.rows if r["status"] == "ok"]
    assert len(result.rows) == len(records) * len(result.classes)
    assert scored and all(r["dice"] == 1.0 for r in scored)


def test_raw_root_subset_selects_cases(phantom_factory, tmp_path):
    adapter = get_adapter("acdc")
    root = phantom_factory("acdc")
    records = [r for r in adapter.discover(root) if r.labeled]
    subset = records[-1].subset
    chosen = [r for r in records if r.subset == subset]
    _predict_from_ground_truth(chosen, tmp_path / "pred")
    result = evaluate_folders(tmp_path / "pred", root, "acdc", subset=subset)
    assert result.complete and {r["case_id"] for r in result.rows} == {r.case_id for r in chosen}


def test_nnunet_labels_folder_uses_dataset_json_of_its_parent(tmp_path):
    root = tmp_path / "Dataset001_Toy"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "tumor": 2},
        "numTraining": 1, "file_ending": ".nii.gz"}), encoding="utf-8")
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[1:3, 2:8, 2:8] = 1
    labels[1:3, 4:6, 4:6] = 2
    write_volume(root / "labelsTr" / "toy_001.nii.gz", Volume(labels, Geometry()))
    write_volume(tmp_path / "pred" / "toy_001.nii.gz", Volume(labels, Geometry()))
    result = evaluate_folders(tmp_path / "pred", root / "labelsTr", "nnunet")
    assert set(result.classes) >= {"organ", "tumor"}
    assert result.complete and all(r["dice"] == 1.0 for r in result.rows)
    assert read_volume(root / "labelsTr" / "toy_001.nii.gz").array.max() == 2
