"""``prepare``: cache layout, resumability, re-preparation on a changed plan, lazy loading, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.data.adapters.base import CaseRecord
from medsam_kit.data.cache import load_prepared, prepare, prepare_cases
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import BHSD
from medsam_kit.data.preprocess import Preprocessor, invert_preprocessing
from medsam_kit.data.samplers import StackSampler
from medsam_kit.io import Geometry, Volume, read_volume, write_volume


class _Loads:
    """Counts case reads, the work a resumed prepare must not repeat."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, record: CaseRecord) -> Case:
        self.count += 1
        image = read_volume(record.image_files[0])
        label = read_volume(record.label_file).array if record.label_file else None
        return Case(
            record.case_id,
            image.array.astype(np.float32),
            image.geometry,
            ("ct",),
            label,
            dict(BHSD.label_names),
            {"source": record.image_files[0]},
        )


def _write_ct_cases(root, n=3, unlabeled=1) -> list[CaseRecord]:
    """Small CT volumes (HU) with labels 2 and 5, written as NIfTI; records share a counting loader."""
    loads = _Loads()
    records = []
    for index in range(n + unlabeled):
        rng = np.random.default_rng(index)
        shape = (5, 30, 34 + 2 * index)
        image = rng.normal(30.0, 15.0, shape).astype(np.int16)
        label = np.zeros(shape, np.uint8)
        label[1:4, 8:20, 10:22] = 2
        label[2, 12:16, 14:18] = 5
        image[label > 0] += 40
        geometry = Geometry((0.45 + 0.05 * index, 0.45 + 0.05 * index, 5.0), (0.0, 0.0, float(index)))
        case_id = f"ct{index:02d}"
        image_file = write_volume(root / "images" / f"{case_id}.nii.gz", Volume(image, geometry))
        label_file = None
        if index < n:
            label_file = write_volume(root / "labels" / f"{case_id}.nii.gz", Volume(label, geometry))
        records.append(
            CaseRecord(case_id, (image_file,), label_file, "training" if label_file else "unlabeled", loads)
        )
    return records


def _mtimes(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_writes_the_layout_and_loads_cases_lazily(tmp_path):
    records = _write_ct_cases(tmp_path / "raw")
    calls = []
    result = prepare_cases(
        records,
        BHSD,
        tmp_path / "prep",
        ct_window=(0, 80),
        progress=lambda done, total: calls.append((done, total)),
    )
    out = tmp_path / "prep"
    assert {p.name for p in out.iterdir()} == {"fingerprint.json", "plan.json", "cases.json", "cases"}
    assert result.prepared == ["ct00", "ct01", "ct02", "ct03"] and result.skipped == []
    assert records[0].loader.count == 8  # one fingerprint pass + one preprocessing pass
    assert calls[-1] == (8, 8)
    index = json.loads((out / "cases.json").read_text())
    assert [e["labeled"] for e in index["cases"]] == [True, True, True, False]
    assert index["cases"][3]["subset"] == "unlabeled"
    assert sorted(p.name for p in (out / "cases" / "ct00").iterdir()) == [
        "case.json",
        "image.npy",
        "label.npy",
    ]

    prepared = load_prepared(out)
    assert len(prepared) == 4 and prepared.case_ids == ["ct00", "ct01", "ct02", "ct03"]
    case = prepared[1]
    assert (
        isinstance(case.image, np.memmap) and case.image.dtype == np.float32 and case.label.dtype == np.uint8
    )
    expected = Preprocessor(prepared.plan).apply(records[1].load())
    np.testing.assert_array_equal(case.image, expected.image)
    np.testing.assert_array_equal(case.label, expected.label)
    assert case.geometry.almost_equal(expected.geometry)
    assert case.meta["source"] == str(records[1].image_files[0])  # meta survives as JSON
    # The stored meta is enough to map a prediction back onto the raw file's grid.
    raw_label = read_volume(records[1].label_file).array
    back = invert_preprocessing(np.asarray(case.label), case.meta)
    assert back.shape == raw_label.shape
    assert 2 * np.sum((back > 0) & (raw_label > 0)) / (np.sum(back > 0) + np.sum(raw_label > 0)) > 0.95
    assert prepared.select(labeled=False).case_ids == ["ct03"]
    assert prepared.select(["ct02", "ct00"]).case_ids == ["ct02", "ct00"]
    assert prepared[1:3].case_ids == ["ct01", "ct02"]
    assert prepared.case("ct03").label is None
    with pytest.raises(KeyError):
        prepared.case("nope")


def test_second_prepare_does_no_work_and_changed_plan_reprepares(tmp_path):
    records = _write_ct_cases(tmp_path / "raw", n=2, unlabeled=0)
    out = tmp_path / "prep"
    prepare_cases(records, BHSD, out, ct_window=(0, 80))
    loads = records[0].loader
    before, count = _mtimes(out), loads.count

    again = prepare_cases(records, BHSD, out, ct_window=(0, 80))
    assert again.prepared == [] and again.skipped == ["ct00", "ct01"] and again.fingerprint_reused
    assert loads.count == count  # not a single file read
    assert _mtimes(out) == before  # nor a single file written

    changed = prepare_cases(records, BHSD, out, ct_window=(0, 100))
    assert changed.prepared == ["ct00", "ct01"] and changed.fingerprint_reused
    assert loads.count == count + 2  # the fingerprint is reused; each case is read once
    assert load_prepared(out).plan.normalization[0].window == (0.0, 100.0)

    respaced = prepare_cases(records, BHSD, out, ct_window=(0, 100), target_spacing_xy=0.8)
    assert respaced.prepared == ["ct00", "ct01"]
    assert load_prepared(out)[0].geometry.spacing[:2] == pytest.approx((0.8, 0.8))


def test_changed_source_file_reprepares_that_case(tmp_path):
    records = _write_ct_cases(tmp_path / "raw", n=2, unlabeled=0)
    out = tmp_path / "prep"
    prepare_cases(records, BHSD, out, ct_window=(0, 80))
    volume = read_volume(records[1].image_files[0])
    write_volume(records[1].image_files[0], Volume(volume.array + 5, volume.geometry))
    os.utime(records[1].image_files[0], ns=(1, 1))  # a different mtime even on coarse-clock file systems
    result = prepare_cases(records, BHSD, out, ct_window=(0, 80))
    assert not result.fingerprint_reused
    assert result.prepared == ["ct01"] and result.skipped == ["ct00"]


def test_in_memory_cases_and_load_errors(tmp_path):
    image = np.full((1, 2, 8, 8), 40.0, np.float32)
    image[0, :, :4] = 0.0
    label = (image[0] > 0).astype(np.uint8)
    case = Case("dom/mem", image, Geometry((1.0, 1.0, 3.0)), ("ct",), label, dict(BHSD.label_names))
    out = tmp_path / "prep"
    with pytest.raises(FileNotFoundError, match="medsam-kit prepare"):
        load_prepared(out)
    assert prepare_cases([case], BHSD, out, ct_window=(0, 80)).prepared == ["dom/mem"]
    assert (out / "cases" / "dom%2Fmem" / "image.npy").is_file()  # ids with slashes (EM) stay one folder
    assert prepare_cases([case], BHSD, out, ct_window=(0, 80)).prepared == []
    loaded = load_prepared(out, mmap=False)[0]
    np.testing.assert_allclose(loaded.image[0, :, 4:], 0.5)  # 40 HU in the 0..80 window
    assert loaded.image[0, :, :4].max() == 0.0
    with pytest.raises(ValueError, match="unique"):
        prepare_cases([case, case], BHSD, out)
    plan = json.loads((out / "plan.json").read_text())
    plan["target_spacing_xy"] = [2.0, 2.0]  # an edited plan no longer matches the prepared cases
    (out / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="another plan"):
        load_prepared(out)


def test_prepare_acdc_phantoms_with_adapter_split_and_sampler(phantom_factory, tmp_path):
    raw = phantom_factory("acdc", cases=5)
    result = prepare("acdc", raw, tmp_path / "prep")
    prepared = load_prepared(tmp_path / "prep")
    assert len(prepared) == 10  # ED + ES frames of 5 patients
    assert prepared.plan.modality == "MRI" and prepared.plan.target_spacing_z is None
    fingerprint = json.loads((tmp_path / "prep" / "fingerprint.json").read_text())
    assert fingerprint["dataset"] == "acdc" and len(fingerprint["cases"]) == 10
    split = json.loads((tmp_path / "prep" / "split.json").read_text())
    listed = sorted(
        i for part in ("train_labeled", "train_unlabeled", "val", "test", "unused") for i in split[part]
    )
    assert listed == sorted(prepared.case_ids) and result.split is not None
    # Slice spacing is kept per case; every case lands on the plan's in-plane spacing.
    for case, entry in zip(prepared, fingerprint["cases"], strict=True):
        assert case.geometry.spacing[:2] == pytest.approx(prepared.plan.target_spacing_xy)
        assert case.geometry.spacing[2] == pytest.approx(entry["spacing"][2])
    labeled = prepared.select(labeled=True)
    sampler = StackSampler(
        labeled, k=3, patch_size=(64, 64), foreground_probability=1.0, num_samples=8, seed=0
    )
    batch = [sampler[i] for i in range(len(sampler))]
    assert all(s["image"].shape == (1, 3, 64, 64) and s["label"].any() for s in batch)


def test_cli_prepare_twice(phantom_factory, tmp_path, capsys):
    raw = phantom_factory("acdc", cases=5)
    out = tmp_path / "prep"
    assert main(["prepare", "acdc", str(raw), "--out", str(out), "--spacing", "1.6"]) == 0
    assert "prepared 10 case(s), 0 already up to date" in capsys.readouterr().out
    assert main(["prepare", "acdc", str(raw), "--out", str(out), "--spacing", "1.6"]) == 0
    assert "prepared 0 case(s), 10 already up to date" in capsys.readouterr().out
    assert load_prepared(out).plan.target_spacing_xy == (1.6, 1.6)
    assert main(["prepare", "acdc", str(raw), "--out", str(out), "--ct-window", "0", "80"]) == 2
    assert "CT window" in capsys.readouterr().err
    assert main(["prepare", "acdc", str(tmp_path / "missing"), "--out", str(out)]) == 2
