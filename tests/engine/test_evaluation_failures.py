"""evaluate_folders on broken inputs: unreadable ground truth, broken raw roots, summary statistics."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.case import case_file_stem
from medsam_kit.engine.evaluation import evaluate_folders
from medsam_kit.io import Geometry, Volume, write_volume

GEOMETRY = Geometry(spacing=(1.25, 1.25, 6.0), origin=(10.0, -4.0, 2.0))
SHAPE = (5, 20, 20)
CASES = ("patient001_frame01", "patient001_frame09", "patient002_frame01")


def _labels(seed: int) -> np.ndarray:
    """ACDC-like labels: LV disc (3) in a MYO ring (2), RV block (1) beside it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: SHAPE[1], : SHAPE[2]]
    cy, cx = 10 + rng.integers(-1, 2), 12 + rng.integers(-1, 2)
    r = np.hypot(y - cy, x - cx)
    plane = np.zeros(SHAPE[1:], np.uint8)
    plane[r < 6] = 2
    plane[r < 3] = 3
    plane[3:8, 1:5] = 1
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:4] = plane
    return labels


@pytest.fixture
def flat(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    labels = {case_id: _labels(i) for i, case_id in enumerate(CASES)}
    for case_id, array in labels.items():
        write_volume(gt_dir / f"{case_id}_gt.nii.gz", Volume(array, GEOMETRY))
        write_volume(pred_dir / f"{case_id}.nii.gz", Volume(array, GEOMETRY))
    return gt_dir, pred_dir, labels


@pytest.fixture
def acdc_raw(phantom_factory, tmp_path) -> tuple[Path, Path, list]:
    """A private copy of the ACDC phantom root (safe to corrupt) and perfect predictions for it."""
    root = tmp_path / "acdc"
    shutil.copytree(phantom_factory("acdc"), root)
    records = [r for r in get_adapter("acdc").discover(root) if r.labeled]
    for record in records:
        label, geometry = record.load_label()
        write_volume(tmp_path / "pred" / f"{case_file_stem(record.case_id)}.nii.gz", Volume(label, geometry))
    return root, tmp_path / "pred", records


# ------------------------------------------------------------------ unreadable ground truth (finding 1)
def test_unreadable_flat_ground_truth_is_a_failure_not_an_abort(flat, tmp_path):
    gt_dir, pred_dir, _ = flat
    (gt_dir / f"{CASES[1]}_gt.nii.gz").write_bytes(b"\x1f\x8b truncated")
    result = evaluate_folders(pred_dir, gt_dir, "acdc", out_dir=tmp_path / "out")
    assert list(result.unreadable_gt) == [CASES[1]] and f"{CASES[1]}_gt.nii.gz" in result.unreadable_gt[CASES[1]]
    assert not result.complete and not result.unreadable and not result.missing
    status = {r["case_id"]: r["status"] for r in result.rows}
    assert status == {CASES[0]: "ok", CASES[1]: "unreadable_gt", CASES[2]: "ok"}
    failed = [r for r in result.rows if r["case_id"] == CASES[1]]
    assert len(failed) == 3 and all(r["dice"] == 0.0 and math.isnan(r["hd95_mm"]) for r in failed)
    summary = json.loads(result.files["summary"].read_text(encoding="utf-8"))
    assert summary["cases"]["unreadable_gt"] == 1 and summary["cases"]["scored"] == 2
    assert list(summary["unreadable_gt"]) == [CASES[1]]
    assert summary["classes"]["LV"]["dice"]["mean"] == pytest.approx(2 / 3)


def test_unreadable_ground_truth_in_a_raw_root(acdc_raw):
    root, pred_dir, records = acdc_raw
    broken = records[0]
    Path(broken.label_file).write_bytes(b"not a nifti file")
    result = evaluate_folders(pred_dir, root, "acdc")
    assert list(result.unreadable_gt) == [broken.case_id]
    assert {r["status"] for r in result.rows if r["case_id"] == broken.case_id} == {"unreadable_gt"}
    assert all(r["dice"] == 1.0 for r in result.rows if r["case_id"] != broken.case_id)


def test_unreadable_ground_truth_without_prediction_is_listed_both_ways(flat):
    gt_dir, pred_dir, _ = flat
    (gt_dir / f"{CASES[0]}_gt.nii.gz").write_bytes(b"garbage")
    (pred_dir / f"{CASES[0]}.nii.gz").unlink()
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert result.missing == [CASES[0]] and list(result.unreadable_gt) == [CASES[0]]
    assert result.summary["cases"]["scored"] == 2


def test_missing_prediction_rows_count_ground_truth_voxels(flat):
    gt_dir, pred_dir, labels = flat
    (pred_dir / f"{CASES[2]}.nii.gz").unlink()
    rows = {r["class"]: r for r in evaluate_folders(pred_dir, gt_dir, "acdc").rows if r["case_id"] == CASES[2]}
    assert rows["LV"]["status"] == "missing"
    assert rows["LV"]["gt_voxels"] == int(np.count_nonzero(labels[CASES[2]] == 3))


# ------------------------------------------------------------------ broken raw roots (finding 2)
def test_raw_root_with_a_broken_patient_scores_the_others(acdc_raw):
    """One patient without Info.cfg: its frames cannot be listed, so the patient is a failed case."""
    root, pred_dir, records = acdc_raw
    info = next(root.rglob("Info.cfg"))
    info.unlink()
    patient = info.parent.name
    result = evaluate_folders(pred_dir, root, "acdc")
    assert list(result.unreadable_gt) == [patient] and "Info.cfg" in result.unreadable_gt[patient]
    assert "\n" not in result.unreadable_gt[patient]
    others = [r for r in records if r.meta["patient"] != patient]
    assert {r["case_id"] for r in result.rows if r["status"] == "ok"} == {r.case_id for r in others}
    assert all(r["dice"] == 1.0 for r in result.rows if r["status"] == "ok")
    assert {r["status"] for r in result.rows if r["case_id"] == patient} == {"unreadable_gt"}
    assert not result.complete and result.summary["cases"]["unreadable_gt"] == 1
    # its predictions pair with no listed case: reported, not dropped
    assert result.unmatched == [f"{patient}_frame{r.meta['frame']:02d}" for r in records
                                if r.meta["patient"] == patient]


def test_raw_root_with_every_case_broken_surfaces_the_adapters_message(acdc_raw):
    root, pred_dir, _ = acdc_raw
    infos = sorted(root.rglob("Info.cfg"))
    for info in infos:
        info.unlink()
    with pytest.raises(ValueError) as caught:
        evaluate_folders(pred_dir, root, "acdc")
    message = str(caught.value)
    assert "raw acdc dataset root" in message and any(str(info) in message for info in infos)
    assert f"{len(infos) - 1} more problem(s)" in message
    assert "found no ground truth" not in message and "\n" not in message


def test_raw_root_with_a_bad_value_fails_that_patient_only(acdc_raw):
    root, pred_dir, records = acdc_raw
    info = next(root.rglob("Info.cfg"))
    info.write_text("ED: 1\nES: one\n", encoding="utf-8")
    result = evaluate_folders(pred_dir, root, "acdc")
    assert "ES must be int" in result.unreadable_gt[info.parent.name]
    assert sum(r["status"] == "ok" for r in result.rows) == 3 * (len(records) - 2)


def test_raw_root_with_a_missing_image_scores_every_labeled_case(acdc_raw):
    """Finding 3: evaluation needs only labels, so one missing image must not abort the run."""
    root, pred_dir, records = acdc_raw
    broken = records[1]
    Path(broken.image_files[0]).unlink()
    result = evaluate_folders(pred_dir, root, "acdc")
    assert list(result.unreadable_gt) == [broken.case_id]
    assert f"{broken.case_id}.nii.gz is missing" in result.unreadable_gt[broken.case_id]
    assert {r["status"] for r in result.rows if r["case_id"] == broken.case_id} == {"unreadable_gt"}
    scored = {r["case_id"] for r in result.rows if r["status"] == "ok"}
    assert scored == {r.case_id for r in records} - {broken.case_id}
    assert not result.missing and not result.unmatched and not result.notes
    assert result.summary["cases"] == {"ground_truth": len(records), "scored": len(records) - 1, "missing": 0,
                                       "mismatched": 0, "unreadable": 0, "unreadable_gt": 1, "unmatched": 0}


def test_raw_root_problem_outside_the_subset_is_a_note_not_a_failure(acdc_raw):
    root, pred_dir, records = acdc_raw
    subsets = sorted({r.subset for r in records})
    assert len(subsets) == 2  # training and testing
    broken = next(r for r in records if r.subset == subsets[0])
    Path(broken.image_files[0]).unlink()
    result = evaluate_folders(pred_dir, root, "acdc", subset=subsets[1])
    assert result.complete and not result.unreadable_gt
    assert len(result.notes) == 1 and broken.case_id in result.notes[0]
    assert result.summary["notes"] == result.notes
    inside = evaluate_folders(pred_dir, root, "acdc", subset=subsets[0])
    assert list(inside.unreadable_gt) == [broken.case_id]


def test_raw_root_without_labels_says_so(acdc_raw):
    root, pred_dir, records = acdc_raw
    for record in records:
        Path(record.label_file).unlink()
    with pytest.raises(FileNotFoundError, match=r"none has a ground-truth label file"):
        evaluate_folders(pred_dir, root, "acdc")


def test_folder_of_other_things_gets_the_adapters_layout_message(flat, tmp_path):
    _, pred_dir, _ = flat
    (tmp_path / "other" / "notes").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"raw acdc dataset root: .*no ACDC patient folders"):
        evaluate_folders(pred_dir, tmp_path / "other", "acdc")


def test_flat_folder_clash_also_names_the_raw_layout_problem(flat):
    gt_dir, pred_dir, _ = flat
    shutil.copy(gt_dir / f"{CASES[0]}_gt.nii.gz", gt_dir / f"{CASES[0]}.nii.gz")
    with pytest.raises(ValueError, match=r"both give case id .*read as a raw acdc root instead"):
        evaluate_folders(pred_dir, gt_dir, "acdc")


def test_broken_adapter_package_is_an_import_error_not_a_flat_fallback(acdc_raw):
    """Evaluation imports the adapter registry directly: no silent change of behaviour without it."""
    root, pred_dir, _ = acdc_raw
    code = ("import sys\n"
            "sys.modules['medsam_kit.data.adapters'] = None  # makes importing it raise ImportError\n"
            "try:\n"
            "    from medsam_kit.engine.evaluation import evaluate_folders\n"
            "except ImportError:\n"
            "    sys.exit(3)\n"
            f"evaluate_folders({str(pred_dir)!r}, {str(root)!r}, 'acdc')\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 3, completed.stderr[-2000:]


# ------------------------------------------------------------------ label files (finding 5)
@pytest.mark.parametrize(("values", "expected"), [
    (np.float32([0.0, 0.5]), "non-integer"),
    (np.int16([0, -1]), "0..255"),
    (np.int32([0, 300]), "0..255"),
])
def test_prediction_that_is_not_a_uint8_label_map_is_unreadable(flat, values, expected):
    gt_dir, pred_dir, labels = flat
    pred = labels[CASES[0]].astype(values.dtype)
    pred[0, 0, :2] = values
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(pred, GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert list(result.unreadable) == [CASES[0]] and expected in result.unreadable[CASES[0]]
    assert not result.invalid_labels


def test_integer_and_bool_predictions_of_any_dtype_are_scored(flat):
    gt_dir, pred_dir, labels = flat
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(labels[CASES[0]].astype(np.float32), GEOMETRY))
    write_volume(pred_dir / f"{CASES[1]}.nii.gz", Volume(labels[CASES[1]].astype(np.int16)[None], GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert result.complete and all(r["dice"] == 1.0 for r in result.rows)


def test_multichannel_prediction_is_unreadable(flat):
    gt_dir, pred_dir, labels = flat
    write_volume(pred_dir / f"{CASES[0]}.nii.gz", Volume(np.stack([labels[CASES[0]]] * 2), GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert "2 channels" in result.unreadable[CASES[0]]


def test_prediction_folder_ignores_hidden_non_volume_files_and_folders(flat):
    gt_dir, pred_dir, _ = flat
    (pred_dir / "notes.txt").write_text("not a volume", encoding="utf-8")
    (pred_dir / "._patient001_frame01.nii.gz").write_bytes(b"AppleDouble")
    (pred_dir / "old.nii.gz").mkdir()
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    assert result.complete and result.unmatched == []


# ------------------------------------------------------------------ overall statistics (finding 4)
def test_overall_statistics_across_classes_and_pooled(flat):
    gt_dir, pred_dir, labels = flat
    for k, case_id in enumerate(CASES):  # case k calls k LV slices MYO; case 0 misses its RV instead
        pred = labels[case_id].copy()
        pred[1 : 1 + k][pred[1 : 1 + k] == 3] = 2
        if k == 0:
            pred[pred == 1] = 0
        write_volume(pred_dir / f"{case_id}.nii.gz", Volume(pred, GEOMETRY))
    result = evaluate_folders(pred_dir, gt_dir, "acdc")
    overall = result.summary["overall"]
    for metric in ("dice", "hd95_mm"):
        class_means = [result.summary["classes"][name][metric]["mean"] for name in ("RV", "MYO", "LV")]
        across = overall["across_classes"][metric]
        assert across["mean"] == pytest.approx(np.mean(class_means))
        assert across["std"] == pytest.approx(np.std(class_means))
        assert across["median"] == pytest.approx(np.median(class_means))
        assert (across["n"], across["n_nan"]) == (3, 0)
        values = np.asarray([r[metric] for r in result.rows], dtype=float)
        worst = np.asarray([r["max_distance_mm"] for r in result.rows], dtype=float)
        finite = np.where(np.isnan(values), worst, values)  # undefined distances count as the diagonal
        pooled = overall["pooled"][metric]
        assert pooled["mean"] == pytest.approx(finite.mean()) and pooled["std"] == pytest.approx(finite.std())
        assert pooled["median"] == pytest.approx(np.median(finite))
        assert pooled["n"] == 9
    assert overall["pooled"]["hd95_mm"]["n_nan"] == 1  # the RV that was not found
    assert overall["across_classes"]["dice"]["std"] > 0  # classes really differ
    assert set(result.summary["overall_definitions"]) == {"classes", "across_classes", "pooled"}
    assert overall["classes"] == ["RV", "MYO", "LV"]  # no regions: every class


def test_bad_tolerance_and_file_paths_raise(flat):
    gt_dir, pred_dir, _ = flat
    with pytest.raises(ValueError, match="tolerance"):
        evaluate_folders(pred_dir, gt_dir, "acdc", nsd_tolerance_mm=-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        evaluate_folders(pred_dir, gt_dir, "acdc", nsd_tolerance_mm=float("nan"))
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        evaluate_folders(pred_dir, gt_dir / f"{CASES[0]}_gt.nii.gz", "acdc")


def test_dataset_without_foreground_classes_is_a_clear_error(tmp_path):
    root = tmp_path / "Dataset002_Empty"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0},
                                                   "numTraining": 1, "file_ending": ".nii.gz"}), encoding="utf-8")
    empty = Volume(np.zeros((3, 4, 4), np.uint8), Geometry())
    write_volume(root / "labelsTr" / "c_001.nii.gz", empty)
    write_volume(tmp_path / "pred" / "c_001.nii.gz", empty)
    with pytest.raises(ValueError, match="no foreground class"):
        evaluate_folders(tmp_path / "pred", root / "labelsTr", "nnunet", out_dir=tmp_path / "out")
