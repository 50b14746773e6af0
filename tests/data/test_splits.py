"""Split protocols: deterministic, disjoint, patient-grouped, budgets respected, exact JSON round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.adapters.base import CaseRecord
from medsam_kit.data.splits import PARTS, Split, make_split

GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def _never_loaded(record):
    raise AssertionError("splits must not read pixels")


def rec(case_id: str, labeled: bool = True, subset: str = "training", **meta) -> CaseRecord:
    return CaseRecord(case_id, (), Path("label.nii.gz") if labeled else None, subset, _never_loaded, meta)


def acdc_records(
    training: int = 100, testing: int = 50, unlabeled_es: tuple[int, ...] = ()
) -> list[CaseRecord]:
    """ED/ES frame records of ACDC-like patients; training patients 20 per group (as in ACDC)."""
    records = []
    for n in range(1, training + testing + 1):
        subset = "training" if n <= training else "testing"
        for phase, frame in (("ED", 1), ("ES", 12)):
            labeled = not (phase == "ES" and n in unlabeled_es)
            records.append(
                rec(
                    f"patient{n:03d}_frame{frame:02d}",
                    labeled,
                    subset,
                    patient=f"patient{n:03d}",
                    phase=phase,
                    group=GROUPS[(n - 1) % 5],
                )
            )
    return records


def patients(ids: list[str]) -> set[str]:
    return {i.split("_")[0] for i in ids}


def assert_partition(split: Split, records: list[CaseRecord]) -> None:
    listed = [i for p in PARTS for i in getattr(split, p)]
    assert len(listed) == len(set(listed)), "parts overlap"
    assert sorted(listed) == sorted(r.case_id for r in records), "every case is in exactly one part"


def assert_grouped(split: Split, records: list[CaseRecord]) -> None:
    part_of_patient: dict[str, set[str]] = {}
    for r in records:
        part = split.part_of(r.case_id)
        part = "train" if part in ("train_labeled", "train_unlabeled") else part
        part_of_patient.setdefault(r.meta.get("patient", r.case_id), set()).add(part)
    # Budget-hidden frames are train_unlabeled beside train_labeled: both count as train.
    assert all(len(parts) == 1 for parts in part_of_patient.values()), part_of_patient


@pytest.mark.parametrize("budget,labeled_patients", [(1, 1), (3, 3), (7, 7), (None, 70)])
def test_acdc_protocol_full_size(budget, labeled_patients):
    records = acdc_records()
    split = make_split(records, "acdc", seed=0, labeled_budget=budget)
    assert_partition(split, records)
    assert_grouped(split, records)
    assert (
        len(patients(split.train)) == 70
        and len(patients(split.val)) == 10
        and len(patients(split.test)) == 20
    )
    assert len(patients(split.train_labeled)) == labeled_patients
    assert len(split.train_labeled) == 2 * labeled_patients  # ED and ES of each labeled patient
    assert patients(split.unused) == {
        f"patient{n:03d}" for n in range(101, 151)
    }  # testing/ is not in the protocol
    # Stratified by pathology group: 4 test and 2 val patients of each of the 5 groups.
    group_of = {r.case_id: r.meta["group"] for r in records}
    assert Counter(group_of[i] for i in split.test if i.endswith("01")) == {g: 4 for g in GROUPS}
    assert Counter(group_of[i] for i in split.val if i.endswith("01")) == {g: 2 for g in GROUPS}
    if budget == 7:
        assert len({group_of[i] for i in split.train_labeled}) == 5  # 7 patients cover all groups


def test_acdc_protocol_small_folder_and_bare_folder():
    records = acdc_records(training=10, testing=0)
    split = make_split(records, "acdc", seed=3, labeled_budget=3)
    assert (len(patients(split.train)), len(patients(split.val)), len(patients(split.test))) == (7, 1, 2)
    assert len(patients(split.train_labeled)) == 1  # 3 of 70 scaled to 7 patients, at least 1
    bare = [rec(r.case_id, r.labeled, "patients", **r.meta) for r in acdc_records(training=5, testing=0)]
    split = make_split(bare, "acdc", seed=0)
    assert (len(patients(split.train)), len(patients(split.val)), len(patients(split.test))) == (3, 1, 1)
    with pytest.raises(ValueError, match="too few"):
        make_split(acdc_records(training=2, testing=0), "acdc")


def test_acdc_unlabeled_frames_of_val_test_patients_are_unused():
    records = acdc_records(training=20, testing=0, unlabeled_es=tuple(range(1, 21)))
    split = make_split(records, "acdc", seed=1)
    assert_partition(split, records)
    # The unlabeled ES frames of the 2 val and 4 test patients are left out, not trained on.
    assert patients(split.unused) == patients(split.val) | patients(split.test)
    assert all(i.endswith("frame12") for i in split.unused) and len(split.unused) == 6
    assert all(i.endswith("frame12") for i in split.train_unlabeled)  # train patients' unlabeled ES frames
    assert patients(split.train_unlabeled) == patients(split.train_labeled)


def test_splits_are_deterministic_and_seeded():
    records = acdc_records()
    a, b = (
        make_split(records, "acdc", seed=5, labeled_budget=3),
        make_split(records[::-1], "acdc", seed=5, labeled_budget=3),
    )
    assert a == b  # order of the records does not matter
    c = make_split(records, "acdc", seed=6, labeled_budget=3)
    assert a.test != c.test


def test_json_round_trip_exact_and_readable(tmp_path):
    split = make_split(acdc_records(), "acdc", seed=2, labeled_budget=7)
    path = split.save(tmp_path / "splits" / "acdc_7.json")
    data = json.loads(path.read_text())
    assert list(data)[:4] == ["version", "protocol", "seed", "params"]
    assert data["protocol"] == "acdc" and data["seed"] == 2 and data["params"]["labeled_budget"] == 7
    assert data["train_labeled"] == split.train_labeled
    loaded = Split.load(path)
    assert loaded == split
    assert loaded.save(tmp_path / "again.json").read_text() == path.read_text()


def test_split_load_rejects_overlap_and_bad_files(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"protocol": "custom", "seed": 0, "train_labeled": ["a", "b"], "val": ["b"], "test": []})
    )
    with pytest.raises(ValueError, match="case 'b' is in both train_labeled and val"):
        Split.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Split.load(path)
    with pytest.raises(FileNotFoundError):
        Split.load(tmp_path / "missing.json")


def test_bhsd_protocol():
    records = [rec(f"ID_{n:04d}", subset="images") for n in range(192)]
    records += [rec(f"U_{n:04d}", labeled=False, subset="unlabeled") for n in range(30)]
    split = make_split(records, "bhsd", seed=0)
    assert_partition(split, records)
    assert (len(split.train_labeled), len(split.test), len(split.val)) == (96, 96, 0)
    assert split.train_unlabeled == [f"U_{n:04d}" for n in range(30)]
    small = make_split(records[:10] + records[-3:], "bhsd", seed=0, labeled_budget=2)
    assert (len(small.train_labeled), len(small.train_unlabeled), len(small.test)) == (2, 3 + 3, 5)


def test_brats_protocol_groups_timepoints():
    records = [rec(f"BraTS-GLI-{n:05d}-000", patient=f"BraTS-GLI-{n:05d}", cohort="GLI") for n in range(45)]
    records += [rec(f"BraTS-GLI-{n:05d}-001", patient=f"BraTS-GLI-{n:05d}", cohort="GLI") for n in range(5)]
    split = make_split(records, "brats", seed=4)
    assert_partition(split, records)
    assert_grouped(split, records)
    n_test = len({i[:15] for i in split.test})
    n_val = len({i[:15] for i in split.val})
    assert (n_test, n_val, 45 - n_test - n_val) == (9, 4, 32)  # 20% test, 10% of the rest val
    assert make_split(records, "brats", seed=4, val_fraction=0.0).val == []


def test_em_protocol_by_stack_name():
    records = [
        rec("lucchi/training", role="train", domain="lucchi"),
        rec("lucchi/testing", role="test", domain="lucchi"),
        rec("mitoem/train", role="train", domain="mitoem"),
        rec("mitoem/val", role="test", domain="mitoem"),
        rec("mitoem/extra", role=None, domain="mitoem"),
        rec("raw", labeled=False, role=None, domain="x"),
        rec("rat_test", labeled=False, role="test", domain="x"),
    ]
    split = make_split(records, "em", seed=0)
    assert split.train_labeled == ["lucchi/training", "mitoem/extra", "mitoem/train"]
    assert split.test == ["lucchi/testing", "mitoem/val"]
    assert split.train_unlabeled == ["raw"] and split.unused == ["rat_test"]


def test_random_protocol_and_errors():
    records = [rec(f"c{n:02d}") for n in range(20)]
    split = make_split(records, "random", seed=0, fractions=(0.6, 0.2, 0.2), labeled_budget=0.5)
    assert (len(split.train), len(split.val), len(split.test), len(split.train_labeled)) == (12, 4, 4, 6)
    assert split.params["fractions"] == [0.6, 0.2, 0.2]
    with pytest.raises(ValueError, match="fractions must be three"):
        make_split(records, "random", fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown split protocol 'kfold'"):
        make_split(records, "kfold")
    with pytest.raises(ValueError, match="more than the 14 training"):
        make_split(records, "random", labeled_budget=15)
    with pytest.raises(ValueError, match="duplicates: c00"):
        make_split(records + [rec("c00")], "random")


def test_select_records():
    records = [rec(f"c{n:02d}") for n in range(10)]
    split = make_split(records, "random", seed=0)
    assert [r.case_id for r in split.select(records, "test")] == split.test
    assert len(split.select(records, "train")) == len(split.train)
    with pytest.raises(KeyError, match="not found in the dataset"):
        split.select(records[:3], "train")


def test_split_of_acdc_phantom(phantom_factory):
    records = get_adapter("acdc").discover(phantom_factory("acdc", cases=4))
    split = make_split(records, "acdc", seed=0, labeled_budget=1)
    assert_partition(split, records)
    assert_grouped(split, records)
    assert len(patients(split.train_labeled)) == 1 and split.val and split.test
