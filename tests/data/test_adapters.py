"""Dataset adapters on tiny raw layouts built in tmp_path (4×8×8 volumes), plus the phantom sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from medsam_kit.data.adapters import discover_cases, get_adapter, list_datasets, load_cases
from medsam_kit.data.adapters.acdc import parse_info_cfg
from medsam_kit.data.datasets import ACDC, BHSD, BRATS, BRATS2021, EM
from medsam_kit.data.regions import class_masks, region_masks
from medsam_kit.io import Geometry, Volume, write_volume

SHAPE = (4, 8, 8)
GEOM = Geometry(spacing=(1.5, 1.5, 5.0), origin=(10.0, -20.0, 30.0))


def write(path: Path, array: np.ndarray, geometry: Geometry = GEOM, **kw) -> Path:
    return write_volume(path, Volume(array, geometry), **kw)


def ramp(dtype=np.int16, offset: int = 0, shape=SHAPE) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 97 + offset).astype(dtype)


def label_map(values=(0, 1, 2, 3), shape=SHAPE) -> np.ndarray:
    return np.resize(np.asarray(values, np.uint8), shape).astype(np.uint8)


# ------------------------------------------------------------------- registry
def test_registry_names_and_unknown_name():
    assert list_datasets() == ["acdc", "bhsd", "brats", "em", "nnunet"]
    assert get_adapter("brats2021").name == "brats"
    assert get_adapter(" ACDC ").name == "acdc"
    with pytest.raises(ValueError, match="choose one of acdc, bhsd, brats, em, nnunet"):
        get_adapter("kits")


# ----------------------------------------------------------------------- ACDC
def make_patient(
    folder: Path,
    patient: str,
    ed: int = 1,
    es: int = 3,
    frames: int = 4,
    gt: bool = True,
    info: str | None = None,
) -> np.ndarray:
    folder.mkdir(parents=True)
    cine = np.stack([ramp(offset=10 * t) for t in range(frames)])  # (T, Z, Y, X)
    write(folder / f"{patient}_4d.nii.gz", cine)
    for frame in (ed, es):
        write(folder / f"{patient}_frame{frame:02d}.nii.gz", cine[frame - 1])
        if gt:
            write(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", label_map((0, 1, 2, 3, frame % 4)))
    text = info or f"ED: {ed}\nES: {es}\nGroup: DCM\nHeight: 184.0\nNbFrame: {frames}\nWeight: 95.0\n"
    (folder / "Info.cfg").write_text(text)
    return cine


@pytest.fixture
def acdc_root(tmp_path):
    make_patient(tmp_path / "training" / "patient001", "patient001")
    make_patient(tmp_path / "training" / "patient002", "patient002", ed=2, es=4, gt=False)
    make_patient(tmp_path / "testing" / "patient101", "patient101")
    return tmp_path


def test_acdc_discover_training_and_testing(acdc_root):
    records = discover_cases("acdc", acdc_root)
    assert [r.case_id for r in records] == [
        "patient001_frame01",
        "patient001_frame03",
        "patient002_frame02",
        "patient002_frame04",
        "patient101_frame01",
        "patient101_frame03",
    ]
    assert [r.subset for r in records] == ["training"] * 4 + ["testing"] * 2
    assert [r.meta["phase"] for r in records] == ["ED", "ES"] * 3
    assert [r.labeled for r in records] == [True, True, False, False, True, True]  # patient002 lacks _gt
    meta = records[0].meta
    assert (meta["patient"], meta["group"], meta["height"], meta["weight"], meta["nb_frames"]) == (
        "patient001",
        "DCM",
        184.0,
        95.0,
        4,
    )
    assert meta["cine_file"] == str(acdc_root / "training" / "patient001" / "patient001_4d.nii.gz")


def test_acdc_load_frame_and_unlabeled_frame(acdc_root):
    records = {r.case_id: r for r in discover_cases("acdc", acdc_root)}
    case = records["patient001_frame03"].load()
    assert case.image.shape == (1, *SHAPE) and case.image.dtype == np.int16
    np.testing.assert_array_equal(case.image[0], ramp(offset=20))
    np.testing.assert_array_equal(case.label, label_map((0, 1, 2, 3, 3)))
    assert case.label.dtype == np.uint8
    assert case.geometry.almost_equal(GEOM)
    assert case.channel_names == ACDC.channel_names and case.label_names == ACDC.label_names
    assert case.meta["phase"] == "ES" and case.meta["frame"] == 3 and case.meta["subset"] == "training"
    assert case.meta["image_files"] == [str(records["patient001_frame03"].image_files[0])]
    unlabeled = records["patient002_frame02"].load()
    assert unlabeled.label is None and unlabeled.meta["label_file"] is None


def test_acdc_bare_patient_folder(acdc_root):
    records = get_adapter("acdc").discover(acdc_root / "training")
    assert {r.subset for r in records} == {"training"} and len(records) == 4
    other = acdc_root / "my_patients"
    shutil.copytree(acdc_root / "testing", other)
    assert {r.subset for r in discover_cases("acdc", other)} == {"patients"}


def test_acdc_cine_frames(acdc_root):
    record = discover_cases("acdc", acdc_root)[0]
    frames = get_adapter("acdc").cine_frames(record)
    assert [c.case_id for c in frames] == ["patient001_frame02", "patient001_frame04"]
    assert all(c.label is None and c.image.shape == (1, *SHAPE) for c in frames)
    np.testing.assert_array_equal(frames[1].image[0], ramp(offset=30))
    assert frames[0].geometry.almost_equal(GEOM) and frames[0].meta["phase"] is None
    everything = get_adapter("acdc").cine_frames(record, include_labeled=True)
    assert [c.meta["phase"] for c in everything] == ["ED", None, "ES", None]


def test_acdc_info_cfg_tolerates_spacing_order_and_case(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text(
        "Weight :  61.5\n\n  es:9\nGroup:   HCM  \nNbFrame: 25\ned : 1.0\nHeight: 160\nExtra: x\n"
    )
    info = parse_info_cfg(path)
    assert (
        info["ed_frame"],
        info["es_frame"],
        info["group"],
        info["height"],
        info["weight"],
        info["nb_frames"],
    ) == (1, 9, "HCM", 160.0, 61.5, 25)
    assert info["info"]["Extra"] == "x"
    path.write_text("ES: 9\nGroup: HCM\n")
    with pytest.raises(ValueError, match=r"Info.cfg: no 'ED:' line"):
        parse_info_cfg(path)
    path.write_text("ED: one\nES: 9\n")
    with pytest.raises(ValueError, match=r"Info.cfg:1: ED must be int, found 'one'"):
        parse_info_cfg(path)


def test_acdc_missing_frame_and_geometry_mismatch(tmp_path):
    make_patient(tmp_path / "training" / "patient003", "patient003")
    (tmp_path / "training" / "patient003" / "patient003_frame03.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="ES = frame 3 but patient003_frame03.nii.gz"):
        discover_cases("acdc", tmp_path)
    folder = tmp_path / "training" / "patient003"
    write(folder / "patient003_frame03.nii.gz", ramp())
    write(folder / "patient003_frame03_gt.nii.gz", label_map(), Geometry(spacing=(1.5, 1.5, 6.0)))
    record = [r for r in discover_cases("acdc", tmp_path) if r.case_id == "patient003_frame03"][0]
    with pytest.raises(
        ValueError, match=r"patient003_frame03_gt.nii.gz differs from .*patient003_frame03.nii.gz"
    ):
        record.load()


# ----------------------------------------------------------------------- BHSD
def make_bhsd(root: Path, label_dir: str = "ground truths", pool: str = "unlabeled") -> None:
    for case_id in ("ID_001", "ID_002", "ID_003"):
        write(root / "images" / f"{case_id}.nii.gz", ramp(offset=-1000))
    for case_id in ("ID_001", "ID_002"):
        write(root / label_dir / f"{case_id}.nii.gz", label_map((0, 1, 2, 3, 4, 5)))
    write(root / pool / "ID_900.nii.gz", ramp())
    (root / "images" / "._ID_001.nii.gz").write_bytes(b"AppleDouble junk")  # must be ignored


@pytest.mark.parametrize("label_dir,pool", [("ground truths", "unlabeled"), ("labels", "unlabelled")])
def test_bhsd_layouts(tmp_path, label_dir, pool):
    make_bhsd(tmp_path, label_dir, pool)
    records = discover_cases("bhsd", tmp_path)
    assert [(r.case_id, r.labeled, r.subset, r.meta["pool"]) for r in records] == [
        ("ID_001", True, "images", False),
        ("ID_002", True, "images", False),
        ("ID_003", False, "images", False),
        ("ID_900", False, "unlabeled", True),
    ]
    case = records[1].load()
    assert case.image.dtype == np.int16 and case.image.min() == -1000
    assert set(np.unique(case.label)) == {0, 1, 2, 3, 4, 5} and case.label_names == BHSD.label_names
    assert case.geometry.almost_equal(GEOM)
    assert [c.case_id for c in load_cases("bhsd", tmp_path, labeled_only=True)] == ["ID_001", "ID_002"]


def test_bhsd_errors(tmp_path):
    make_bhsd(tmp_path)
    write(tmp_path / "ground truths" / "ID_404.nii.gz", label_map())
    with pytest.raises(FileNotFoundError, match="ID_404.nii.gz: mask without an image"):
        discover_cases("bhsd", tmp_path)
    (tmp_path / "ground truths" / "ID_404.nii.gz").unlink()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match="both 'ground truths/' and 'labels/'"):
        discover_cases("bhsd", tmp_path)


# ---------------------------------------------------------------------- BraTS
def make_brats_case(
    root: Path,
    case_id: str,
    naming: str,
    seg: np.ndarray | None,
    skip: str | None = None,
    seg_geometry: Geometry = GEOM,
) -> None:
    sep, names = (
        ("-", ("t1n", "t1c", "t2w", "t2f")) if naming == "2023" else ("_", ("t1", "t1ce", "t2", "flair"))
    )
    folder = root / case_id
    for k, modality in enumerate(names):
        if modality != skip:
            write(folder / f"{case_id}{sep}{modality}.nii.gz", np.full(SHAPE, k + 1, np.float32))
    if seg is not None:
        write(folder / f"{case_id}{sep}seg.nii.gz", seg, seg_geometry)


def brats_seg(et: int) -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[1, :2] = 1  # NCR: 16 voxels
    seg[2] = 2  # ED: 64 voxels
    seg[3, :4] = et  # ET: 32 voxels
    return seg


def test_brats_2023_naming_and_regions(tmp_path):
    for case_id in (
        "BraTS-GLI-00000-000",
        "BraTS-GLI-00000-001",
        "BraTS-MEN-00007-000",
        "BraTS-SSA-00002-000",
    ):
        make_brats_case(tmp_path, case_id, "2023", brats_seg(3))
    make_brats_case(tmp_path, "BraTS-PED-00001-000", "2023", None)  # validation case: no seg
    (tmp_path / "notes").mkdir()  # stray folder without BraTS files is not a case
    adapter = get_adapter("brats")
    assert adapter.spec(tmp_path) is BRATS
    records = adapter.discover(tmp_path)
    assert [(r.meta["patient"], r.meta["cohort"], r.meta["timepoint"], r.labeled) for r in records] == [
        ("BraTS-GLI-00000", "GLI", "000", True),
        ("BraTS-GLI-00000", "GLI", "001", True),
        ("BraTS-MEN-00007", "MEN", "000", True),
        ("BraTS-PED-00001", "PED", "000", False),
        ("BraTS-SSA-00002", "SSA", "000", True),
    ]
    case = records[0].load()
    assert case.image.shape == (4, *SHAPE) and case.image.dtype == np.float32
    assert [float(case.image[k, 0, 0, 0]) for k in range(4)] == [1.0, 2.0, 3.0, 4.0]  # t1n, t1c, t2w, t2f
    assert case.channel_names == ("t1n", "t1c", "t2w", "t2f") and case.label_names[3] == "ET"
    masks = region_masks(case.label, adapter.spec(tmp_path))
    assert {k: int(v.sum()) for k, v in masks.items()} == {"WT": 112, "TC": 48, "ET": 32}
    assert {k: int(v.sum()) for k, v in class_masks(case.label, BRATS).items()} == {
        "NCR": 16,
        "ED": 64,
        "ET": 32,
        "WT": 112,
        "TC": 48,
    }


def test_brats_2021_naming(tmp_path):
    make_brats_case(tmp_path, "BraTS2021_00000", "2021", brats_seg(4))
    adapter = get_adapter("brats2021")
    assert adapter.spec(tmp_path) is BRATS2021
    case = adapter.discover(tmp_path)[0].load()
    assert case.channel_names == ("t1", "t1ce", "t2", "flair") and case.label_names[4] == "ET"
    assert [float(case.image[k].mean()) for k in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert int(region_masks(case.label, BRATS2021)["ET"].sum()) == 32
    assert int(region_masks(case.label, BRATS)["ET"].sum()) == 0  # 2023 spec would miss ET=4


def test_brats_missing_modality_mixed_naming_and_bad_seg_geometry(tmp_path):
    make_brats_case(tmp_path, "BraTS-GLI-00001-000", "2023", brats_seg(3), skip="t2f")
    with pytest.raises(FileNotFoundError, match="BraTS case BraTS-GLI-00001-000: missing modality t2f"):
        discover_cases("brats", tmp_path)
    shutil.rmtree(tmp_path / "BraTS-GLI-00001-000")
    make_brats_case(
        tmp_path,
        "BraTS-GLI-00002-000",
        "2023",
        brats_seg(3),
        seg_geometry=Geometry(spacing=(1.5, 1.5, 5.0), origin=(12.0, -20.0, 30.0)),
    )
    with pytest.raises(ValueError, match=r"-seg.nii.gz differs from .*-t1n.nii.gz \(origin"):
        discover_cases("brats", tmp_path)[0].load()
    make_brats_case(tmp_path, "BraTS2021_00001", "2021", brats_seg(4))
    with pytest.raises(ValueError, match="mixes BraTS 2021"):
        discover_cases("brats", tmp_path)


# ------------------------------------------------------------------------- EM
EM_GEOM = Geometry(spacing=(5e-6, 5e-6, 5e-6))


def em_mask(shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[:, 2:5, 3:6] = 255
    return mask


def make_lucchi(root: Path) -> None:
    for stem in ("training", "testing"):
        write(root / f"{stem}.tif", ramp(np.uint8), EM_GEOM)
        write(root / f"{stem}_groundtruth.tif", em_mask(), EM_GEOM)
    write(root / "extra.tif", ramp(np.uint8), EM_GEOM)


def make_mitoem(root: Path) -> None:
    geometry = Geometry(spacing=(8e-6, 8e-6, 30e-6))
    instances = np.zeros(SHAPE, np.uint16)
    instances[:, :3, :3], instances[:, 5:, 5:] = 7, 300  # two instances, one id above 255
    for case in ("train", "val"):
        write(root / case / "im", ramp(np.uint8), geometry, folder_format="png-slices")
        write(root / case / "mito", instances, geometry, folder_format="tiff-slices")
    with h5py.File(root / "human_train_im.h5", "w") as f:  # CREMI-style resolution (z, y, x) in mm
        f.create_dataset("main", data=ramp(np.uint8)).attrs["resolution"] = (30e-6, 8e-6, 8e-6)
    with h5py.File(root / "human_train_mito.h5", "w") as f:
        f.create_dataset("main", data=instances)
    with h5py.File(root / "rat_test_im.h5", "w") as f:
        f.create_dataset("main", data=ramp(np.uint8))


def test_em_lucchi_stacks(tmp_path):
    make_lucchi(tmp_path)
    records = discover_cases("em", tmp_path)
    assert [(r.case_id, r.labeled, r.meta["role"], r.meta["form"]) for r in records] == [
        ("extra", False, None, "tiff-stack"),
        ("testing", True, "test", "tiff-stack"),
        ("training", True, "train", "tiff-stack"),
    ]
    case = records[2].load()
    assert case.image.dtype == np.uint8 and case.image.shape == (1, *SHAPE)
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 1}
    assert int(case.label.sum()) == int((em_mask() == 255).sum())
    assert case.geometry.almost_equal(EM_GEOM, atol=1e-12) and case.meta["geometry_source"] == "file"
    assert case.channel_names == EM.channel_names and case.meta["domain"] == tmp_path.name


def test_em_mitoem_slices_and_hdf5(tmp_path):
    make_mitoem(tmp_path)
    records = {r.case_id: r for r in discover_cases("em", tmp_path)}
    assert {k: (r.meta["form"], r.meta["role"], r.labeled) for k, r in records.items()} == {
        "human_train": ("hdf5", "train", True),
        "rat_test": ("hdf5", "test", False),
        "train": ("slices", "train", True),
        "val": ("slices", "test", True),
    }
    for case_id in ("train", "human_train"):
        case = records[case_id].load()
        assert case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 1}
        assert int(case.label.sum()) == 4 * (9 + 9)  # both instances, incl. id 300, binarised
        assert case.image.shape == (1, *SHAPE)
        np.testing.assert_allclose(case.geometry.spacing_zyx, (30e-6, 8e-6, 8e-6), rtol=1e-9)
    assert records["rat_test"].load().meta["geometry_source"] == "default"
    # A single case folder as the root: its mito/ TIFF slices must not turn into stack cases.
    single = discover_cases("em", tmp_path / "val")
    assert [(r.case_id, r.labeled, r.meta["form"]) for r in single] == [("val", True, "slices")]


def test_em_nested_domains_and_default_geometry(tmp_path):
    make_lucchi(tmp_path / "lucchi")
    make_mitoem(tmp_path / "mitoem")
    tifffile.imwrite(tmp_path / "lucchi" / "raw.tif", ramp(np.uint8), photometric="minisblack")  # no geometry
    records = {r.case_id: r for r in discover_cases("em", tmp_path)}
    assert sorted(records) == [
        "lucchi/extra",
        "lucchi/raw",
        "lucchi/testing",
        "lucchi/training",
        "mitoem/human_train",
        "mitoem/rat_test",
        "mitoem/train",
        "mitoem/val",
    ]
    assert (
        records["mitoem/val"].meta["domain"] == "mitoem"
        and records["lucchi/testing"].meta["domain"] == "lucchi"
    )
    raw = records["lucchi/raw"].load()
    assert (
        raw.geometry.spacing == pytest.approx((5e-6, 5e-6, 5e-6)) and raw.meta["geometry_source"] == "default"
    )
    adapter = type(get_adapter("em"))(default_spacing_nm=(40.0, 4.0, 4.0))
    raw = [r for r in adapter.discover(tmp_path) if r.case_id == "lucchi/raw"][0].load()
    assert raw.geometry.spacing_zyx == pytest.approx((40e-6, 4e-6, 4e-6))


def test_em_orphan_ground_truth(tmp_path):
    write(tmp_path / "training_groundtruth.tif", em_mask(), EM_GEOM)
    with pytest.raises(FileNotFoundError, match="training_groundtruth.tif has no image training.tif"):
        discover_cases("em", tmp_path)


# -------------------------------------------------------------------- nnU-Net
def make_nnunet(root: Path, labels: dict | None = None, channels: dict | None = None, num_training: int = 2):
    channels = channels or {"1": "ADC", "0": "T2"}  # keys deliberately out of order
    labels = labels or {"background": 0, "edema": 1, "core": 2, "whole": [1, 2]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Prostate",
                "channel_names": channels,
                "labels": labels,
                "numTraining": num_training,
                "file_ending": ".nii.gz",
            }
        )
    )
    for case_id in ("case_a", "case_b"):
        for c in range(len(channels)):
            write(root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", np.full(SHAPE, 100 * (c + 1), np.int16))
        write(root / "labelsTr" / f"{case_id}.nii.gz", label_map((0, 1, 2)))
    for c in range(len(channels)):
        write(root / "imagesTs" / f"case_t_{c:04d}.nii.gz", np.full(SHAPE, 100 * (c + 1), np.int16))


def test_nnunet_multichannel_with_regions(tmp_path):
    root = tmp_path / "Dataset042_Prostate"
    make_nnunet(root)
    adapter = get_adapter("nnunet")
    spec = adapter.spec(root)
    assert spec.channel_names == ("T2", "ADC") and spec.modality == "MRI"
    assert spec.label_names == {0: "background", 1: "edema", 2: "core"} and spec.regions == {"whole": (1, 2)}
    records = adapter.discover(root)
    assert [(r.case_id, r.subset, r.labeled) for r in records] == [
        ("case_a", "training", True),
        ("case_b", "training", True),
        ("case_t", "testing", False),
    ]
    case = records[0].load()
    assert case.image.shape == (2, *SHAPE) and case.image.dtype == np.int16
    assert [int(case.image[k, 0, 0, 0]) for k in range(2)] == [100, 200]  # channel 0 = T2 first
    assert case.channel_names == ("T2", "ADC") and case.meta["dataset_name"] == "Prostate"
    assert int(region_masks(case.label, spec)["whole"].sum()) == int((label_map((0, 1, 2)) > 0).sum())


def test_nnunet_spec_variants(tmp_path):
    make_nnunet(
        tmp_path / "a",
        labels={"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": [3], "ignore": 4},
        channels={"0": "CT"},
    )
    spec = get_adapter("nnunet").spec(tmp_path / "a")
    assert spec.modality == "CT" and spec.ignore_label == 4
    assert spec.label_names == {0: "background", 1: "label_1", 2: "label_2", 3: "label_3", 4: "ignore"}
    assert spec.regions == {"whole": (1, 2, 3), "core": (2, 3), "enh": (3,)}
    make_nnunet(tmp_path / "v1", labels={"0": "background", "1": "liver"}, channels={"0": "CT"})
    assert get_adapter("nnunet").spec(tmp_path / "v1").label_names == {0: "background", 1: "liver"}


def test_nnunet_errors(tmp_path):
    root = tmp_path / "d"
    make_nnunet(root)
    (root / "imagesTr" / "case_b_0001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case case_b lacks channel file.*case_b_0001.nii.gz"):
        discover_cases("nnunet", root)
    make_nnunet(tmp_path / "e", num_training=5)
    with pytest.raises(ValueError, match="numTraining is 5 but imagesTr holds 2"):
        discover_cases("nnunet", tmp_path / "e")
    make_nnunet(tmp_path / "f")
    (tmp_path / "f" / "labelsTr" / "case_a.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing label of training case case_a"):
        discover_cases("nnunet", tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="dataset.json: missing"):
        discover_cases("nnunet", tmp_path)


# ------------------------------------------------- discovery rules shared by all adapters
def test_uppercase_suffixes_are_found(tmp_path):
    make_patient(tmp_path / "training" / "patient001", "patient001")
    make_brats_case(tmp_path / "brats", "BraTS-GLI-00000-000", "2023", brats_seg(3))
    renamed = [tmp_path / "training" / "patient001" / "patient001_frame03_gt.nii.gz",
               tmp_path / "brats" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz"]
    for path in renamed:
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    acdc = {r.case_id: r for r in discover_cases("acdc", tmp_path)}
    assert acdc["patient001_frame03"].label_file.name == "patient001_frame03_gt.NII.GZ"
    brats = discover_cases("brats", tmp_path / "brats")[0]
    assert brats.image_files[3].name == "BraTS-GLI-00000-000-t2f.NII.GZ"
    assert float(brats.load().image[3].mean()) == 4.0


def test_broken_symlinks_are_listed_and_fail_on_load(tmp_path):
    make_bhsd(tmp_path / "bhsd")
    make_nnunet(tmp_path / "nn")
    make_lucchi(tmp_path / "em")
    make_mitoem(tmp_path / "mito")
    shutil.rmtree(tmp_path / "mito" / "val" / "mito")
    links = [tmp_path / "bhsd" / "ground truths" / "ID_003.nii.gz", tmp_path / "nn" / "labelsTr" / "case_b.nii.gz",
             tmp_path / "em" / "extra_groundtruth.tif", tmp_path / "mito" / "val" / "mito"]
    for link in links:
        link.unlink(missing_ok=True)
        link.symlink_to(tmp_path / "gone")
    datasets, case_ids = ("bhsd", "nnunet", "em", "em"), ("ID_003", "case_b", "extra", "val")
    for dataset, case_id, link in zip(datasets, case_ids, links, strict=True):
        record = {r.case_id: r for r in discover_cases(dataset, tmp_path / link.relative_to(tmp_path).parts[0])}[
            case_id]
        assert record.label_file == link  # not silently unlabeled
        with pytest.raises(FileNotFoundError, match=f"{link.name}: is a broken symbolic link to .*gone"):
            record.load()


def test_non_strict_discovery_skips_bad_cases_and_keeps_duplicates(tmp_path):
    make_lucchi(tmp_path)
    write(tmp_path / "orphan_groundtruth.tif", em_mask(), EM_GEOM)
    write(tmp_path / "extra" / "im", ramp(np.uint8), EM_GEOM, folder_format="png-slices")  # id 'extra' twice
    with pytest.raises(FileNotFoundError, match="orphan_groundtruth.tif has no image orphan.tif"):
        get_adapter("em").discover(tmp_path)
    problems = []
    records = get_adapter("em").discover(tmp_path, problems=problems)
    assert [r.case_id for r in records] == ["extra", "extra", "testing", "training"]
    assert [(p.file, p.case_id) for p in problems] == [(tmp_path / "orphan_groundtruth.tif", "orphan")]
    (tmp_path / "orphan_groundtruth.tif").unlink()
    with pytest.raises(ValueError, match="case id 'extra' is used by both"):
        get_adapter("em").discover(tmp_path)


def test_acdc_patient_in_training_and_testing_fails_strict_discovery(acdc_root):
    shutil.copytree(acdc_root / "training" / "patient001", acdc_root / "testing" / "patient001")
    with pytest.raises(ValueError, match="case id 'patient001_frame01' is used by both"):
        discover_cases("acdc", acdc_root)


def test_em_identity_geometry_stored_in_the_file_is_kept(tmp_path):
    write(tmp_path / "stack.tif", ramp(np.uint8), Geometry())  # stored, though it is the identity grid
    case = discover_cases("em", tmp_path)[0].load()
    assert case.meta["geometry_source"] == "file" and case.geometry == Geometry()


# ------------------------------------------------------------------- phantoms
PHANTOM_SETS = [
    ("acdc", "acdc", "acdc"),
    ("bhsd", "bhsd", "bhsd"),
    ("brats", "brats", "brats"),
    ("brats2021", "brats2021", "brats"),
    ("em", "em", "em"),
]


@pytest.mark.parametrize("phantom,adapter_name,module", PHANTOM_SETS)
def test_adapters_discover_phantom_sets(phantom_factory, phantom, adapter_name, module):
    root = phantom_factory(phantom, cases=1)
    adapter = get_adapter(adapter_name)
    spec = adapter.spec(root)
    assert spec.name == phantom
    records = adapter.discover(root)
    labeled = [r for r in records if r.labeled]
    assert labeled, f"no labeled cases discovered in the {phantom} phantom"
    case = labeled[0].load()
    assert case.image.ndim == 4 and case.image.shape[0] == len(spec.channel_names)
    assert case.label.shape == case.image.shape[1:] and case.label.dtype == np.uint8
    assert set(np.unique(case.label)) <= set(spec.label_values)
    assert np.count_nonzero(case.label) > 0


def test_non_finite_image_is_refused_on_load(tmp_path):
    """A NaN in one modality must stop loading (and so `prepare`), not spread through normalisation."""
    root = tmp_path / "bhsd"
    image = np.zeros((4, 8, 8), np.float32)
    image[1, 2, 3] = np.nan
    write_volume(root / "images" / "a.nii.gz", Volume(image, Geometry()))
    write_volume(root / "labels" / "a.nii.gz", Volume(np.zeros((4, 8, 8), np.uint8), Geometry()))
    (record,) = get_adapter("bhsd").discover(root)
    with pytest.raises(ValueError, match="1 NaN/Inf voxels"):
        record.load()
