"""evaluate_folders: predictions without geometry, EM masks, worst-case distances, BraTS regions and naming."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.case import case_file_stem
from medsam_kit.engine.evaluation import evaluate_folders
from medsam_kit.engine.metrics import image_diagonal_mm
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

GEOMETRY = Geometry(spacing=(1.5, 1.5, 4.0), origin=(-20.0, 7.0, 1.0))
SHAPE = (6, 24, 24)
DIAGONAL_MM = math.sqrt((6 * 4.0) ** 2 + (24 * 1.5) ** 2 + (24 * 1.5) ** 2)
CASES = ("patient001_frame01", "patient002_frame01", "patient003_frame01")


def _labels(k: int) -> np.ndarray:
    """ACDC-like: RV block (1), MYO ring (2) around an LV disc (3), moved a little per case."""
    y, x = np.mgrid[: SHAPE[1], : SHAPE[2]]
    r = np.hypot(y - 12 - k % 2, x - 14)
    plane = np.zeros(SHAPE[1:], np.uint8)
    plane[r < 7] = 2
    plane[r < 4] = 3
    plane[3:9, 1:5] = 1
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:5] = plane
    return labels


def _plain_tif(path: Path, array: np.ndarray) -> None:
    """A TIFF stack as other tools write it: no geometry of any kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack")
    assert read_volume(path).meta["stored_geometry"] is False


@pytest.fixture
def flat(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    labels = {case_id: _labels(k) for k, case_id in enumerate(CASES)}
    for case_id, array in labels.items():
        write_volume(gt_dir / f"{case_id}_gt.nii.gz", Volume(array, GEOMETRY))
        write_volume(pred_dir / f"{case_id}.nii.gz", Volume(array, GEOMETRY))
    return gt_dir, pred_dir, labels


# ------------------------------------------------------------ 1: predictions without stored geometry
def test_plain_tif_prediction_is_compared_by_shape_and_scored_on_the_ground_truth_geometry(flat):
    gt_dir, pred_dir, labels = flat
    for case_id in CASES[:2]:
        (pred_dir / f"{case_id}.nii.gz").unlink()
    _plain_tif(pred_dir / f"{CASES[0]}.tif", labels[CASES[0]])
    _plain_tif(pred_dir / f"{CASES[1]}.tif", np.roll(labels[CASES[1]], 2, axis=2))  # 2 voxels = 3 mm in x
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert result.complete and not result.mismatched
    rows = {(r["case_id"], r["class"]): r for r in result.rows}
    assert all(rows[(CASES[0], c)]["dice"] == 1.0 for c in ("RV", "MYO", "LV"))
    # distances in the ground truth's mm (1.5 mm in x), not the identity grid's 1 mm voxels
    assert rows[(CASES[1], "LV")]["hd95_mm"] == pytest.approx(3.0)
    assert rows[(CASES[1], "LV")]["max_distance_mm"] == pytest.approx(DIAGONAL_MM)


def test_plain_tif_prediction_of_another_shape_is_still_mismatched(flat):
    gt_dir, pred_dir, labels = flat
    (pred_dir / f"{CASES[0]}.nii.gz").unlink()
    _plain_tif(pred_dir / f"{CASES[0]}.tif", labels[CASES[0]][:, :20])
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert list(result.mismatched) == [CASES[0]] and "shape (6, 20, 24)" in result.mismatched[CASES[0]]


def test_stored_geometry_is_still_compared(flat):
    gt_dir, pred_dir, labels = flat
    moved = Geometry(GEOMETRY.spacing, (-20.0, 7.0, 3.0), GEOMETRY.direction)
    write_volume(pred_dir / f"{CASES[2]}.tif", Volume(labels[CASES[2]], moved))  # tif with geometry
    (pred_dir / f"{CASES[2]}.nii.gz").unlink()
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert list(result.mismatched) == [CASES[2]] and "origin" in result.mismatched[CASES[2]]


def test_em_raw_root_scores_plain_0_255_and_instance_id_tif_predictions(phantom_factory, tmp_path):
    root = phantom_factory("em")
    records = [r for r in get_adapter("em").discover(root) if r.labeled]
    assert len(records) >= 2 and all(r.binarize_label for r in records)
    for k, record in enumerate(records):
        label, _ = record.load_label()
        # Lucchi-style 0/255 masks, and for one case MitoEM-style instance ids beyond uint8
        pred = label.astype(np.uint16) * 1000 if k == 0 else label * np.uint8(255)
        _plain_tif(tmp_path / "pred" / f"{case_file_stem(record.case_id)}.tif", pred)
    result = evaluate_folders(tmp_path / "pred", root, "em")
    assert not result.mismatched and not result.invalid_labels and not result.unreadable
    assert result.complete and len(result.rows) == len(records)
    assert all(r["dice"] == 1.0 and r["hd95_mm"] == 0.0 for r in result.rows)


def test_flat_em_folder_of_lucchi_masks_is_binarised(tmp_path):
    mask = np.zeros((4, 16, 16), np.uint8)
    mask[1:3, 4:10, 5:12] = 255
    geometry = Geometry(spacing=(5e-6, 5e-6, 5e-6))
    write_volume(tmp_path / "gt" / "testing_groundtruth.tif", Volume(mask, geometry))
    _plain_tif(tmp_path / "pred" / "testing.tif", mask)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "em")
    assert result.complete and not result.invalid_labels
    (row,) = result.rows
    assert row["dice"] == 1.0 and row["gt_voxels"] == 2 * 6 * 7
    assert row["max_distance_mm"] == pytest.approx(image_diagonal_mm((4, 16, 16), (5e-6,) * 3))


# ------------------------------------------------------------ 3: one unusable case in a raw root
@pytest.mark.slow  # BraTS phantoms take ~10 s
def test_brats_root_with_a_missing_modality_scores_the_other_cases(phantom_factory, tmp_path):
    root = tmp_path / "brats"
    shutil.copytree(phantom_factory("brats"), root)
    records = get_adapter("brats").discover(root)
    for record in records:
        label, geometry = record.load_label()
        write_volume(tmp_path / "pred" / f"{record.case_id}.nii.gz", Volume(label, geometry))
    broken = records[0]
    Path(broken.image_files[2]).unlink()  # t2w gone; the seg is still there
    result = evaluate_folders(tmp_path / "pred", root, "brats")
    assert list(result.unreadable_gt) == [broken.case_id] and "missing modality t2w" in result.unreadable_gt[
        broken.case_id]
    scored = [r for r in result.rows if r["status"] == "ok"]
    assert {r["case_id"] for r in scored} == {r.case_id for r in records[1:]}
    assert all(r["dice"] == 1.0 for r in scored) and not result.unmatched


# ------------------------------------------------------------ 2: undefined distances count as worst case
def _summary_means(result) -> dict:
    summary = result.summary
    means = {(name, m): stats[m]["mean"] for name, stats in summary["classes"].items() for m in ("dice", "hd95_mm")}
    for level in ("across_classes", "pooled"):
        means.update({(level, m): summary["overall"][level][m]["mean"] for m in ("dice", "hd95_mm", "assd_mm")})
    return means


def test_deleting_the_worst_prediction_never_improves_the_summary(flat):
    gt_dir, pred_dir, labels = flat
    bad = np.roll(labels[CASES[2]], 6, axis=1)  # 9 mm off: the worst case, every distance finite
    write_volume(pred_dir / f"{CASES[2]}.nii.gz", Volume(bad, GEOMETRY))
    full = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert full.complete and all(math.isfinite(r["hd95_mm"]) for r in full.rows)
    (pred_dir / f"{CASES[2]}.nii.gz").unlink()
    partial = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert partial.missing == [CASES[2]]
    before, after = _summary_means(full), _summary_means(partial)
    for key, value in before.items():
        if key[1] == "dice":
            assert after[key] <= value, key
        else:
            assert after[key] > value, key
    lv = partial.summary["classes"]["LV"]["hd95_mm"]
    assert (lv["n"], lv["n_nan"]) == (3, 1) and lv["mean"] == pytest.approx(DIAGONAL_MM / 3)


def test_missing_a_structure_never_beats_finding_it_badly(flat):
    gt_dir, pred_dir, labels = flat
    shifted = labels[CASES[0]].copy()
    shifted[shifted == 1] = 0
    shifted[1:5, 15:21, 18:22] = 1  # RV drawn in the wrong place: a large but finite HD95
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(shifted, GEOMETRY))
    found_badly = evaluate_folders(pred_dir, gt_dir, "acdc").summary["classes"]["RV"]["hd95_mm"]
    absent = labels[CASES[0]].copy()
    absent[absent == 1] = 0
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(absent, GEOMETRY))
    missed = evaluate_folders(pred_dir, gt_dir, "acdc").summary["classes"]["RV"]["hd95_mm"]
    assert found_badly["n_nan"] == 0 and missed["n_nan"] == 1 and missed["n"] == 3
    assert missed["mean"] > found_badly["mean"] > 0


def test_metrics_csv_keeps_nan_and_summary_states_the_policy(flat, tmp_path):
    gt_dir, pred_dir, _ = flat
    (pred_dir / f"{CASES[1]}.nii.gz").unlink()
    result = evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=tmp_path / "out")
    with open(result.files["csv"], encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["case_id"] == CASES[1]]
    assert len(rows) == 3 and all(math.isnan(float(r["hd95_mm"])) and math.isnan(float(r["assd_mm"])) for r in rows)
    assert all(float(r["max_distance_mm"]) == pytest.approx(DIAGONAL_MM) for r in rows)
    summary = json.loads(result.files["summary"].read_text(encoding="utf-8"))
    assert "diagonal" in summary["distance_nan_policy"] and "BraTS" in summary["distance_nan_policy"]
    assert summary["classes"]["MYO"]["assd_mm"]["mean"] == pytest.approx(DIAGONAL_MM / 3)


def test_unreadable_ground_truth_counts_as_the_largest_diagonal_of_the_run(flat):
    gt_dir, pred_dir, _ = flat
    (gt_dir / f"{CASES[0]}_gt.nii.gz").write_bytes(b"garbage")
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert all(r["max_distance_mm"] is None for r in result.rows if r["case_id"] == CASES[0])
    hd95 = result.summary["classes"]["LV"]["hd95_mm"]
    assert (hd95["n"], hd95["n_nan"]) == (3, 1) and hd95["mean"] == pytest.approx(DIAGONAL_MM / 3)


# ------------------------------------------------------------ 4: BraTS regions and label naming
def _brats_labels(et: int) -> np.ndarray:
    labels = np.zeros((12, 16, 16), np.uint8)
    labels[3:9, 3:13, 3:13] = 2
    labels[5:7, 6:10, 6:10] = 1
    labels[5:7, 10:12, 6:10] = et
    return labels


def _brats_flat(tmp_path: Path, et: int, pred_et: int | None = None) -> tuple[Path, Path]:
    geometry = Geometry(spacing=(1.0, 1.0, 1.0))
    labels = _brats_labels(et)
    write_volume(tmp_path / "gt" / "BraTS-GLI-00001-000-seg.nii.gz", Volume(labels, geometry))
    pred = labels.copy()
    pred[pred == et] = pred_et if pred_et is not None else et
    write_volume(tmp_path / "pred" / "BraTS-GLI-00001-000.nii.gz", Volume(pred, geometry))
    return tmp_path / "pred", tmp_path / "gt"


def test_brats_overall_statistics_use_the_regions_only(tmp_path):
    pred_dir, gt_dir = _brats_flat(tmp_path, et=3, pred_et=1)  # ET called NCR: ET 0, NCR < 1, WT/TC 1
    result = evaluate_folders(pred_dir, gt_dir, "brats")
    summary = result.summary
    assert summary["overall"]["classes"] == ["WT", "TC", "ET"] and result.overall_classes == ("WT", "TC", "ET")
    assert list(summary["classes"]) == ["NCR", "ED", "ET", "WT", "TC"]  # per-label statistics stay
    across, pooled = summary["overall"]["across_classes"]["dice"], summary["overall"]["pooled"]["dice"]
    assert across["mean"] == pytest.approx(2 / 3) and across["n"] == 3
    assert pooled["n"] == 3 and pooled["mean"] == pytest.approx(2 / 3)
    assert {r["class"] for r in result.rows} == {"NCR", "ED", "ET", "WT", "TC"}  # metrics.csv keeps labels


@pytest.mark.parametrize(("dataset", "et", "other"), [("brats", 4, "brats2021"), ("brats2021", 3, "brats")])
def test_flat_brats_folder_with_the_other_et_label_is_an_error(tmp_path, dataset, et, other):
    pred_dir, gt_dir = _brats_flat(tmp_path, et=et)
    with pytest.raises(ValueError, match=rf"use --dataset {other}$") as caught:
        evaluate_folders(pred_dir, gt_dir, dataset)
    assert "BraTS-GLI-00001-000-seg.nii.gz" in str(caught.value) and "\n" not in str(caught.value)
    right = evaluate_folders(pred_dir, gt_dir, other)
    assert right.complete and all(r["dice"] == 1.0 for r in right.rows)


def test_brats_guard_passes_cases_without_et_and_mixed_folders_report_invalid_labels(tmp_path):
    geometry = Geometry()
    no_et = _brats_labels(et=2)  # no ET in this case at all
    for name, labels in (("BraTS-GLI-00001-000", no_et), ("BraTS-GLI-00002-000", _brats_labels(3)),
                         ("BraTS-GLI-00003-000", _brats_labels(4))):
        write_volume(tmp_path / "gt" / f"{name}-seg.nii.gz", Volume(labels, geometry))
        write_volume(tmp_path / "pred" / f"{name}.nii.gz", Volume(labels, geometry))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "brats")
    assert list(result.invalid_labels) == ["BraTS-GLI-00003-000"] and "[4]" in result.invalid_labels[
        "BraTS-GLI-00003-000"]
