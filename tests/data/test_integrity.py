"""check_dataset: clean tiny layouts give no errors; each corruption gives exactly its problem kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medsam_kit.data import integrity
from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter
from medsam_kit.data.datasets import ACDC, EM, DatasetSpec
from medsam_kit.data.integrity import ERROR, KINDS, WARNING, Problem, check_dataset
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

SHAPE = (4, 6, 8)  # (Z, Y, X)
GEOMETRY = Geometry((1.5, 1.25, 5.0), (10.0, -20.0, 30.0))
BRATS_MODALITIES = ("t1n", "t1c", "t2w", "t2f")


# ------------------------------------------------------------------ tiny raw layouts
def _image(seed: int, dtype=np.float32) -> np.ndarray:
    image = np.random.default_rng(seed).normal(300, 50, SHAPE)
    image[:, :, :2] = 0  # zero background, like skull-stripped BraTS
    return image.astype(dtype)


def _label(values=(1, 2, 3)) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    for i, value in enumerate(values):
        label[1:3, 1 + i, 3:6] = value
    return label


def _write(path: Path, array: np.ndarray, geometry: Geometry = GEOMETRY) -> Path:
    return write_volume(path, Volume(array, geometry))


def make_acdc(root: Path, patients=(("training", 1), ("training", 2))) -> Path:
    """Patients with 2 cine frames (ED 1, ES 2), both labeled, and the 4D cine file."""
    for subset, number in patients:
        folder = root / subset / f"patient{number:03d}"
        folder.mkdir(parents=True)
        info = "ED: 1\nES: 2\nGroup: NOR\nHeight: 180.0\nNbFrame: 2\nWeight: 80.0\n"
        (folder / "Info.cfg").write_text(info, encoding="utf-8")
        frames = [_image(number * 10 + frame, np.int16) for frame in (1, 2)]
        _write(folder / f"patient{number:03d}_4d.nii.gz", np.stack(frames))  # (T, Z, Y, X)
        for frame, image in zip((1, 2), frames, strict=True):
            stem = folder / f"patient{number:03d}_frame{frame:02d}"
            _write(Path(f"{stem}.nii.gz"), image)
            _write(Path(f"{stem}_gt.nii.gz"), _label())
    return root


def make_brats(root: Path, cases=2) -> Path:
    for index in range(cases):
        case = f"BraTS-GLI-{index:05d}-000"
        for k, modality in enumerate(BRATS_MODALITIES):
            _write(root / case / f"{case}-{modality}.nii.gz", _image(index * 10 + k), Geometry())
        _write(root / case / f"{case}-seg.nii.gz", _label(), Geometry())
    return root


def make_bhsd(root: Path) -> Path:
    """Two labeled scans (the second lesion-free) and one scan in the unlabeled pool."""
    hu = lambda seed: (_image(seed) - 300).astype(np.int16)  # noqa: E731
    _write(root / "images" / "ID_001.nii.gz", hu(1))
    _write(root / "ground truths" / "ID_001.nii.gz", _label((2, 4, 5)))
    _write(root / "images" / "ID_002.nii.gz", hu(2))
    _write(root / "ground truths" / "ID_002.nii.gz", np.zeros(SHAPE, np.uint8))
    _write(root / "unlabeled" / "ID_900.nii.gz", hu(3))
    return root


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


def only(problems: list[Problem], kind: str, file: Path) -> Problem:
    """Assert there is exactly one problem, of ``kind``, about ``file``; return it."""
    assert [(p.kind, p.file) for p in problems] == [(kind, file)], [str(p) for p in problems]
    problem = problems[0]
    assert problem.severity == ERROR
    assert "\n" not in str(problem) and str(problem).startswith(f"{file}: ") and " — " in str(problem)
    return problem


def truncate(path: Path) -> None:
    """Cut the end off a file (a .nii.gz keeps its header, so the voxel data ends early)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) // 2, len(data) - 40)])


# --------------------------------------------------------------------------- ACDC
@pytest.fixture
def acdc(tmp_path):
    return make_acdc(tmp_path / "acdc")


def test_acdc_clean_has_no_problems_and_reports_progress(acdc):
    calls = []
    problems = check_dataset(get_adapter("acdc"), acdc, progress=lambda *args: calls.append(args))
    assert problems == []
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_acdc_deleted_frame_is_a_discovery_problem_and_the_other_cases_are_checked(acdc):
    missing = acdc / "training" / "patient002" / "patient002_frame02.nii.gz"
    missing.unlink()
    calls = []
    problems = check_dataset(get_adapter("acdc"), acdc, progress=lambda *args: calls.append(args))
    problem = only(problems, "discovery", missing)
    assert problem.case_id == "patient002_frame02" and "ES = frame 2" in problem.message
    assert calls[-1] == (3, 3)  # the ED frame of that patient and the other patient are checked


def test_acdc_problems_of_several_cases_are_all_reported_in_one_run(acdc):
    make_acdc(acdc, patients=(("training", 3), ("testing", 1)))  # patient001 also in testing/
    (acdc / "training" / "patient002" / "Info.cfg").write_text("ED: one\nES: 2\n", encoding="utf-8")
    missing = acdc / "training" / "patient003" / "patient003_frame01.nii.gz"
    missing.unlink()
    bad_label = acdc / "training" / "patient003" / "patient003_frame02_gt.nii.gz"
    _write(bad_label, _label((1, 2, 9)))
    calls = []
    problems = check_dataset(get_adapter("acdc"), acdc, progress=lambda *args: calls.append(args))
    assert sorted((p.kind, p.case_id, p.file) for p in problems) == sorted([
        ("discovery", "patient002", acdc / "training" / "patient002" / "Info.cfg"),
        ("discovery", "patient003_frame01", missing),
        ("duplicate-case-id", "patient001_frame01", acdc / "testing" / "patient001" / "patient001_frame01.nii.gz"),
        ("duplicate-case-id", "patient001_frame02", acdc / "testing" / "patient001" / "patient001_frame02.nii.gz"),
        ("label-values", "patient003_frame02", bad_label)])
    assert "ED must be int, found 'one'" in next(p.message for p in problems if p.case_id == "patient002")
    assert calls[-1] == (5, 5)  # 2 + 2 copies of patient001, patient003's ES frame


def test_acdc_cine_file_is_checked_once_per_patient(acdc):
    folder = acdc / "training" / "patient001"
    cine = folder / "patient001_4d.nii.gz"
    frames = np.stack([_image(11, np.int16), _image(12, np.int16)])
    _write(cine, frames, Geometry(GEOMETRY.spacing, (10.0, -20.0, 35.0), GEOMETRY.direction))
    problem = only(check_dataset(get_adapter("acdc"), acdc), "cine", cine)
    assert "origin" in problem.message and "patient001_frame01.nii.gz" in problem.message
    record = next(r for r in get_adapter("acdc").discover(acdc) if r.case_id == "patient001_frame01")
    with pytest.raises(ValueError, match="geometry of .*patient001_4d.nii.gz differs"):
        get_adapter("acdc").cine_frames(record)  # loading applies the same rule
    _write(cine, frames[:1])  # one frame, but Info.cfg says NbFrame: 2
    problem = only(check_dataset(get_adapter("acdc"), acdc), "cine", cine)
    assert "holds 1 frame(s) but Info.cfg gives NbFrame: 2" in problem.message
    _write(cine, frames)
    other = acdc / "training" / "patient002" / "patient002_4d.nii.gz"
    truncate(other)
    assert only(check_dataset(get_adapter("acdc"), acdc), "unreadable", other).case_id == "patient002_frame01"


def test_acdc_truncated_image_is_unreadable(acdc):
    path = acdc / "training" / "patient001" / "patient001_frame02.nii.gz"
    truncate(path)
    problem = only(check_dataset(get_adapter("acdc"), acdc), "unreadable", path)
    assert problem.case_id == "patient001_frame02"
    assert problem.message.startswith("cannot read: ") and "complete" in str(problem)


def test_unreadable_says_truncated_or_corrupt_once(tmp_path):
    path = _write(tmp_path / "big.nii.gz", np.random.default_rng(0).normal(0, 1, (16, 32, 32)).astype(np.float32))
    truncate(path)
    problem = only(check_dataset(ListAdapter("x", ACDC, [_record("big", [path])]), tmp_path), "unreadable", path)
    assert str(problem).count("truncated or corrupt") == 1, str(problem)


def test_acdc_garbage_label_is_unreadable(acdc):
    path = acdc / "training" / "patient002" / "patient002_frame01_gt.nii.gz"
    path.write_bytes(b"this is not a NIfTI file " * 40)
    only(check_dataset(get_adapter("acdc"), acdc), "unreadable", path)


def test_acdc_label_value_7_lists_value_and_voxel_count(acdc):
    path = acdc / "training" / "patient001" / "patient001_frame01_gt.nii.gz"
    label = _label()
    label[0, 0, :5] = 7
    _write(path, label)
    problem = only(check_dataset(get_adapter("acdc"), acdc), "label-values", path)
    assert "7 (5 voxels)" in problem.message and "3 LV" in problem.message


def test_acdc_shifted_label_origin_is_a_geometry_mismatch(acdc):
    path = acdc / "training" / "patient002" / "patient002_frame02_gt.nii.gz"
    shifted = Geometry(GEOMETRY.spacing, (10.0, -20.0, 32.5), GEOMETRY.direction)
    _write(path, _label(), shifted)
    problem = only(check_dataset(get_adapter("acdc"), acdc), "geometry-mismatch", path)
    assert "origin" in problem.message and "32.5" in problem.message and "spacing" not in problem.message


def test_acdc_sub_tolerance_origin_difference_is_accepted(acdc):
    path = acdc / "training" / "patient002" / "patient002_frame02_gt.nii.gz"
    _write(path, _label(), Geometry(GEOMETRY.spacing, (10.0, -20.0, 30.00003), GEOMETRY.direction))
    assert check_dataset(get_adapter("acdc"), acdc) == []


def test_acdc_patient_in_training_and_testing_is_a_duplicate_id(acdc):
    shutil.copytree(acdc / "training" / "patient001", acdc / "testing" / "patient001")
    problems = check_dataset(get_adapter("acdc"), acdc)
    assert sorted(p.case_id for p in problems) == ["patient001_frame01", "patient001_frame02"]
    assert {p.kind for p in problems} == {"duplicate-case-id"}
    # One of the two copies is named as the file, the other in the message.
    for problem in problems:
        copies = {acdc / subset / "patient001" / f"{problem.case_id}.nii.gz"
                  for subset in ("training", "testing")}
        assert problem.file in copies
        assert str((copies - {problem.file}).pop()) in problem.message


# -------------------------------------------------------------------------- BraTS
@pytest.fixture
def brats(tmp_path):
    return make_brats(tmp_path / "brats")


def _brats_file(root: Path, index: int, modality: str) -> Path:
    case = f"BraTS-GLI-{index:05d}-000"
    return root / case / f"{case}-{modality}.nii.gz"


def test_brats_clean_has_no_problems(brats):
    assert check_dataset(get_adapter("brats"), brats) == []


def test_brats_modality_with_another_shape(brats):
    path = _brats_file(brats, 1, "t2f")
    _write(path, np.pad(_image(7), ((0, 0), (0, 0), (0, 1))), Geometry())
    problem = only(check_dataset(get_adapter("brats"), brats), "shape-mismatch", path)
    assert "(4, 6, 9)" in problem.message and "(4, 6, 8)" in problem.message


def test_brats_first_modality_with_another_shape_blames_it_not_the_others(brats):
    path = _brats_file(brats, 0, "t1n")
    _write(path, np.pad(_image(7), ((0, 0), (0, 0), (0, 1))), Geometry())
    only(check_dataset(get_adapter("brats"), brats), "shape-mismatch", path)


def test_brats_nan_in_an_image(brats):
    path = _brats_file(brats, 0, "t1c")
    image = _image(1)
    image[2, 3, 4:6] = np.nan
    image[0, 0, 7] = np.inf
    _write(path, image, Geometry())
    problem = only(check_dataset(get_adapter("brats"), brats), "non-finite", path)
    assert "2 NaN and 1 Inf" in problem.message


def test_brats_constant_and_empty_images(brats):
    constant, empty = _brats_file(brats, 0, "t2w"), _brats_file(brats, 1, "t1n")
    _write(constant, np.full(SHAPE, 42.0, np.float32), Geometry())
    _write(empty, np.zeros(SHAPE, np.float32), Geometry())
    problems = check_dataset(get_adapter("brats"), brats)
    assert sorted((p.kind, p.file) for p in problems) == [("constant-image", constant),
                                                          ("empty-image", empty)]
    assert "42.0" in next(p for p in problems if p.kind == "constant-image").message


def test_brats_missing_modality_names_the_expected_file(brats):
    path = _brats_file(brats, 1, "t2f")
    path.unlink()
    problem = only(check_dataset(get_adapter("brats"), brats), "discovery", path)
    assert "t2f" in problem.message


def test_brats_problems_of_several_cases_are_all_reported_in_one_run(tmp_path):
    root = make_brats(tmp_path / "brats", cases=4)
    missing, truncated = _brats_file(root, 0, "t2f"), _brats_file(root, 1, "t1c")
    bad_seg, link = _brats_file(root, 2, "seg"), _brats_file(root, 2, "t2w")
    missing.unlink()
    truncate(truncated)
    _write(bad_seg, _label((1, 2, 7)), Geometry())
    link.unlink()
    link.symlink_to(root / "gone.nii.gz")
    calls = []
    problems = check_dataset(get_adapter("brats"), root, progress=lambda *args: calls.append(args))
    assert [(p.kind, p.case_id, p.file) for p in problems] == [
        ("discovery", "BraTS-GLI-00000-000", missing),
        ("unreadable", "BraTS-GLI-00001-000", truncated),
        ("missing-file", "BraTS-GLI-00002-000", link),
        ("label-values", "BraTS-GLI-00002-000", bad_seg),
    ]
    assert calls[-1] == (3, 3)  # every case but the one discovery left out
    with pytest.raises(FileNotFoundError, match="missing modality t2f"):
        get_adapter("brats").discover(root)  # strict discovery (loading) still stops
    record = get_adapter("brats").discover(root, problems=[])[1]
    with pytest.raises(FileNotFoundError, match="broken symbolic link"):
        record.load()


def test_brats_2021_label_value_in_2023_naming_hints_at_relabelling(brats):
    path = _brats_file(brats, 0, "seg")
    _write(path, _label((1, 2, 4)), Geometry())
    problem = only(check_dataset(get_adapter("brats"), brats), "label-values", path)
    assert "4 (6 voxels)" in problem.message and "relabel 4 to 3" in problem.fix


def test_brats_reads_each_file_once(brats, monkeypatch):
    reads: list[Path] = []
    original = integrity.read_volume

    def counting(path, key=None):
        reads.append(Path(path))
        return original(path, key=key)

    monkeypatch.setattr(integrity, "read_volume", counting)
    assert check_dataset(get_adapter("brats"), brats) == []
    assert len(reads) == len(set(reads)) == 10  # 2 cases x (4 modalities + seg)


# --------------------------------------------------------------------------- BHSD
@pytest.fixture
def bhsd(tmp_path):
    return make_bhsd(tmp_path / "bhsd")


def test_bhsd_lesion_free_label_is_only_a_warning(bhsd):
    problems = check_dataset(get_adapter("bhsd"), bhsd)
    assert [(p.kind, p.severity, p.file) for p in problems] == [
        ("empty-label", WARNING, bhsd / "ground truths" / "ID_002.nii.gz")]
    assert "lesion-free" in problems[0].fix


def test_bhsd_float_labels(bhsd):
    whole, fractional = bhsd / "ground truths" / "ID_001.nii.gz", bhsd / "ground truths" / "ID_002.nii.gz"
    _write(whole, _label((2, 4, 5)).astype(np.float32))
    label = _label((1,)).astype(np.float32)
    label[0, 0, 0] = 0.5
    _write(fractional, label)
    problems = check_dataset(get_adapter("bhsd"), bhsd)
    assert [(p.kind, p.severity, p.file) for p in problems] == [
        ("label-dtype", WARNING, whole), ("label-dtype", ERROR, fractional)]
    assert "0.5" in problems[1].message


def test_bhsd_empty_image_and_label_shape(bhsd):
    image, label = bhsd / "unlabeled" / "ID_900.nii.gz", bhsd / "ground truths" / "ID_001.nii.gz"
    _write(image, np.zeros(SHAPE, np.int16))
    _write(label, np.zeros((4, 6, 7), np.uint8))
    problems = check_dataset(get_adapter("bhsd"), bhsd)
    assert sorted((p.kind, p.file.name, p.severity) for p in problems) == [
        ("empty-image", "ID_900.nii.gz", ERROR), ("empty-label", "ID_001.nii.gz", WARNING),
        ("empty-label", "ID_002.nii.gz", WARNING), ("shape-mismatch", "ID_001.nii.gz", ERROR)]


def test_bhsd_problems_of_several_cases_are_all_reported_in_one_run(bhsd):
    (bhsd / "images" / "ID_001.nii.gz").unlink()  # its mask is now an orphan
    _write(bhsd / "unlabeled" / "ID_002.nii.gz", _image(5).astype(np.int16))  # id in images/ and the pool
    _write(bhsd / "images" / "ID_003.nii.gz", _image(6).astype(np.int16))
    (bhsd / "ground truths" / "ID_003.nii.gz").symlink_to(bhsd / "elsewhere.nii.gz")  # dangling
    problems = check_dataset(get_adapter("bhsd"), bhsd)
    assert sorted((p.kind, p.case_id, p.file.name) for p in problems) == [
        ("discovery", "ID_001", "ID_001.nii.gz"),
        ("duplicate-case-id", "ID_002", "ID_002.nii.gz"),
        ("empty-label", "ID_002", "ID_002.nii.gz"),
        ("missing-file", "ID_003", "ID_003.nii.gz"),
    ]
    orphan = next(p for p in problems if p.kind == "discovery")
    assert orphan.file == bhsd / "ground truths" / "ID_001.nii.gz" and "mask without an image" in orphan.message
    link = next(p for p in problems if p.kind == "missing-file")
    assert link.file == bhsd / "ground truths" / "ID_003.nii.gz"
    assert f"broken symbolic link to {bhsd / 'elsewhere.nii.gz'}" in link.message
    with pytest.raises(FileNotFoundError, match="mask without an image"):
        get_adapter("bhsd").discover(bhsd)  # strict discovery (loading) still stops at the first
    (bhsd / "ground truths" / "ID_001.nii.gz").unlink()
    with pytest.raises(ValueError, match="case id 'ID_002' is used by both"):
        get_adapter("bhsd").discover(bhsd)


def test_bhsd_channel_count_follows_the_loader(bhsd):
    image, label = bhsd / "images" / "ID_001.nii.gz", bhsd / "ground truths" / "ID_002.nii.gz"
    _write(image, np.stack([_image(1), _image(2)]).astype(np.int16))  # (2, Z, Y, X) in a 1-channel slot
    _write(label, np.stack([_label(), _label()]))
    problems = errors(check_dataset(get_adapter("bhsd"), bhsd))
    assert [(p.kind, p.file) for p in problems] == [("channel-count", image), ("channel-count", label)]
    assert "found 2 channels" in problems[0].message
    records = {r.case_id: r for r in get_adapter("bhsd").discover(bhsd)}
    for case_id in ("ID_001", "ID_002"):
        with pytest.raises(ValueError, match="expected one 3D channel"):
            records[case_id].load()


# --------------------------------------------- library behaviour on a hand-made adapter
class ListAdapter(DatasetAdapter):
    """Adapter returning fixed records (lists files whether or not they exist)."""

    def __init__(self, name: str, spec: DatasetSpec, records=(), error: Exception | None = None):
        self.name, self._spec, self._records, self._error = name, spec, list(records), error

    def spec(self, root):
        return self._spec

    def discover(self, root, problems=None):
        if self._error is not None:
            raise self._error
        return self._records


def _record(case_id, images, label=None, subset="training", binarize_label=False):
    return CaseRecord(case_id, tuple(images), label, subset, loader=lambda r: None,
                      binarize_label=binarize_label)


def test_missing_files_listed_by_the_adapter(tmp_path):
    image, label = _write(tmp_path / "a.nii.gz", _image(0)), tmp_path / "a_gt.nii.gz"
    adapter = ListAdapter("x", ACDC, [_record("a", [image, tmp_path / "b.nii.gz"], label)])
    problems = check_dataset(adapter, tmp_path)
    assert [(p.kind, p.file) for p in problems] == [("missing-file", tmp_path / "b.nii.gz"),
                                                    ("missing-file", label)]
    assert "label file of case a" in problems[1].message


def test_adapter_exceptions_become_problems(tmp_path):
    for error in (FileNotFoundError(f"{tmp_path}/sub: no such folder"), RuntimeError("adapter bug")):
        problems = check_dataset(ListAdapter("x", ACDC, error=error), tmp_path)
        assert [p.kind for p in problems] == ["discovery"]
    assert problems[0].message == "RuntimeError: adapter bug" and problems[0].file == tmp_path
    missing = check_dataset(ListAdapter("x", ACDC), tmp_path / "nowhere")
    assert [(p.kind, p.file) for p in missing] == [("discovery", tmp_path / "nowhere")]


def test_unforeseen_errors_per_file_are_reported_not_raised(tmp_path, monkeypatch):
    image = _write(tmp_path / "a.nii.gz", _image(0))
    other = tmp_path / "b.xyz"  # an unknown format: volume_format raises while reading the header
    other.write_bytes(b"x")

    def broken(path, key=None):
        raise MemoryError("out of memory")

    problems = check_dataset(ListAdapter("x", ACDC, [_record("a", [image, other])]), tmp_path)
    assert [(p.kind, p.file) for p in problems] == [("unreadable", other)]
    monkeypatch.setattr(integrity, "read_volume", broken)
    problems = check_dataset(ListAdapter("x", ACDC, [_record("a", [image])]), tmp_path)
    assert [(p.kind, p.message) for p in problems] == [
        ("unreadable", "cannot read: MemoryError: out of memory")]


def test_non_finite_values_in_uncompressed_float64_nifti_and_nrrd(tmp_path):
    images = []
    for name in ("a.nii", "b.nrrd"):
        image = _image(0).astype(np.float64)
        image[1, 1, 3:6] = [np.inf, -np.inf, np.nan]
        images.append(_write(tmp_path / name, image))
    problems = check_dataset(ListAdapter("x", ACDC, [_record(p.name, [p]) for p in images]), tmp_path)
    assert [(p.kind, p.file) for p in problems] == [("non-finite", images[0]), ("non-finite", images[1])]
    assert all("1 NaN and 2 Inf voxels of 192" in p.message for p in problems)


def test_em_labels_are_binarised_and_geometry_free_files_compare_by_shape(tmp_path):
    em_geometry = Geometry((5e-6, 5e-6, 5e-6))
    image = _write(tmp_path / "training.tif", _image(0, np.uint8), em_geometry)
    mask = tmp_path / "training_groundtruth.tif"
    # A plain TIFF from another tool: no geometry stored.
    tifffile.imwrite(mask, _label((255,)), photometric="minisblack")
    assert read_volume(mask).meta["stored_geometry"] is False
    adapter = ListAdapter("em", EM, [_record("training", [image], mask, binarize_label=True)])
    assert check_dataset(adapter, tmp_path) == []
    # A stored geometry is compared, even the identity grid, and even 2 nm (under 1e-4 mm) apart.
    for geometry in (Geometry(), Geometry((5e-6, 5e-6, 5e-6), (2e-6, 0.0, 0.0))):
        _write(mask, _label((255,)), geometry)
        assert [p.kind for p in check_dataset(adapter, tmp_path)] == ["geometry-mismatch"]
    tifffile.imwrite(mask, _label((3,)).astype(np.int16) - 1, photometric="minisblack")
    problem = only(check_dataset(adapter, tmp_path), "label-values", mask)
    assert "-1 (" in problem.message


def test_label_rule_is_the_loaders(tmp_path):
    """Fractional values fail binarised labels too; without a spec, values must fit uint8."""
    em_geometry = Geometry((5e-6, 5e-6, 5e-6))
    image = _write(tmp_path / "a.tif", _image(0, np.uint8), em_geometry)
    mask = _write(tmp_path / "a_groundtruth.tif", _label((255,)).astype(np.float32) / 2, em_geometry)
    adapter = ListAdapter("em", EM, [_record("a", [image], mask, binarize_label=True)])
    problem = only(check_dataset(adapter, tmp_path), "label-dtype", mask)
    assert "127.5" in problem.message
    with pytest.raises(ValueError, match="non-integer values"):
        get_adapter("em").discover(tmp_path)[0].load()

    class NoSpec(ListAdapter):
        def spec(self, root):
            raise ValueError("no spec")

    label = _label((1,)).astype(np.uint16)
    label[0, 0, :6] = 300
    big = _write(tmp_path / "b_gt.nii.gz", label)
    nifti = _write(tmp_path / "b.nii.gz", _image(1))
    problems = check_dataset(NoSpec("x", ACDC, [_record("b", [nifti], big)]), tmp_path)
    assert [p.kind for p in problems] == ["discovery", "label-values"]
    assert "300 (6 voxels)" in problems[1].message and "0..255" in problems[1].message


def test_hdf5_key_main_is_read_when_the_file_holds_several_datasets(tmp_path):
    import h5py

    image = _write(tmp_path / "c_im.h5", _image(0, np.uint8))
    with h5py.File(image, "a") as f:
        f["other"] = np.zeros(3)
    adapter = ListAdapter("em", EM, [_record("c", [image])])
    assert check_dataset(adapter, tmp_path) == []


def test_problem_string_is_one_line():
    problem = Problem(Path("/d/a.nii.gz"), "a", "unreadable", "cannot read:\n  line two", "fix it")
    assert str(problem) == "/d/a.nii.gz: cannot read: line two — fix it"
    assert str(Problem(None, "a", "check-error", "m", "f")) == "case a: m — f"
    assert set(KINDS) >= {"missing-file", "unreadable", "shape-mismatch", "geometry-mismatch", "non-finite",
                          "empty-image", "constant-image", "label-dtype", "label-values", "empty-label",
                          "duplicate-case-id", "discovery", "dataset-json"}


# ------------------------------------------------------------------------ nnU-Net
def make_nnunet(root: Path, cases=("c1", "c2"), **overrides) -> Path:
    meta = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "tumor": 1}, "numTraining": len(cases),
            "file_ending": ".nii.gz", **overrides}
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    for i, case in enumerate(cases):
        _write(root / "imagesTr" / f"{case}_0000.nii.gz", _image(i))
        _write(root / "labelsTr" / f"{case}.nii.gz", _label((1,)))
    return root


def test_nnunet_clean_and_dataset_json_consistency(tmp_path):
    clean = make_nnunet(tmp_path / "Dataset001_A")
    assert check_dataset(get_adapter("nnunet"), clean) == []

    wrong_count = make_nnunet(tmp_path / "Dataset002_B", numTraining=3)
    problem = only(check_dataset(get_adapter("nnunet"), wrong_count), "dataset-json",
                   wrong_count / "dataset.json")
    assert "numTraining is 3 but imagesTr holds 2" in problem.message

    stray = make_nnunet(tmp_path / "Dataset003_C")
    _write(stray / "imagesTr" / "c3_0000.nrrd", _image(3))
    (stray_problem,) = check_dataset(get_adapter("nnunet"), stray)  # nnU-Net ignores it: a warning
    assert (stray_problem.kind, stray_problem.file, stray_problem.severity) == (
        "dataset-json", stray / "imagesTr" / "c3_0000.nrrd", WARNING)


def test_nnunet_problems_of_several_cases_are_all_reported_in_one_run(tmp_path):
    root = make_nnunet(tmp_path / "Dataset005_E", cases=("c1", "c2", "c3", "c4"), numTraining=5)
    (root / "labelsTr" / "c2.nii.gz").unlink()
    _write(root / "labelsTr" / "c9.nii.gz", _label((1,)))  # no image
    _write(root / "imagesTr" / "c3_0001.nii.gz", _image(7))  # dataset.json declares one channel
    (root / "labelsTr" / "c4.nii.gz").unlink()
    (root / "labelsTr" / "c4.nii.gz").symlink_to(root / "gone.nii.gz")
    calls = []
    problems = check_dataset(get_adapter("nnunet"), root, progress=lambda *args: calls.append(args))
    assert [(p.kind, p.case_id, p.file) for p in problems] == [
        ("discovery", "c3", root / "imagesTr" / "c3_0001.nii.gz"),
        ("discovery", "c2", root / "labelsTr" / "c2.nii.gz"),
        ("discovery", "c9", root / "labelsTr" / "c9.nii.gz"),
        ("dataset-json", None, root / "dataset.json"),
        ("missing-file", "c4", root / "labelsTr" / "c4.nii.gz"),
    ]
    assert "numTraining is 5 but imagesTr holds 4 cases" in problems[3].message
    assert calls[-1] == (2, 2)  # c1 and c4


def test_nnunet_adapter_json_errors_are_kept_beside_the_checkers(tmp_path):
    root = make_nnunet(tmp_path / "Dataset006_F", numTraining=7)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    del meta["file_ending"]
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    problems = check_dataset(get_adapter("nnunet"), root)
    assert [(p.kind, p.file) for p in problems] == [("dataset-json", root / "dataset.json")] * 2
    assert "numTraining is 7 but imagesTr holds 2" in problems[0].message  # the adapter's
    assert problems[1].message == "dataset.json lacks file_ending"  # the checker's
    assert integrity._merge_nnunet_json(root, problems[:1], problems) == problems  # exact repeat dropped


def test_nnunet_dataset_json_missing_keys(tmp_path):
    root = make_nnunet(tmp_path / "Dataset004_D")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2"},
                                                   "labels": {"background": 0, "tumor": 1}}), encoding="utf-8")
    problems = integrity.check_nnunet_json(root)
    assert [p.kind for p in problems] == ["dataset-json"]
    assert "numTraining, file_ending" in problems[0].message
    (root / "dataset.json").write_text(json.dumps({"labels": {"tumor": 1}}), encoding="utf-8")
    problems = check_dataset(get_adapter("nnunet"), root)
    assert [p.kind for p in problems] == ["dataset-json", "dataset-json"]
    assert "'channel_names' must be a non-empty object" in problems[0].message


# ------------------------------------------------------------------------ phantoms
@pytest.mark.parametrize("dataset", ["acdc", "bhsd", "brats", "em"])
def test_clean_phantoms_have_no_errors(dataset, phantom_factory):
    adapter = get_adapter(dataset)
    root = phantom_factory(dataset, cases=None if dataset == "em" else 2)  # em: its default is the cheapest
    calls = []
    problems = check_dataset(adapter, root, progress=lambda done, total: calls.append(total))
    assert errors(problems) == [], [str(p) for p in problems]
    assert calls and calls[-1] >= 2
    assert all(p.kind == "empty-label" for p in problems)


def test_acdc_frame_without_gt_is_a_warning(tmp_path, phantom_factory):
    import shutil

    root = tmp_path / "acdc"
    shutil.copytree(phantom_factory("acdc", cases=2), root)
    gt = next(root.glob("training/patient001/patient001_frame01_gt.nii.gz"))
    gt.unlink()
    problems = check_dataset("acdc", root)
    assert [(p.kind, p.severity, p.file.name) for p in problems] == [("missing-label", "warning", gt.name)]
