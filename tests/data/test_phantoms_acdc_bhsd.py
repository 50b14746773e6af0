"""ACDC and BHSD phantoms: exact raw layout, dtypes, geometry, anatomy and a non-trivial task."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medsam_kit.data.phantoms import acdc, bhsd
from medsam_kit.io import read_volume

ACDC_KEYS = ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
BHSD_ID = re.compile(r"^ID_[0-9a-f]{8}\.nii\.gz$")


def _info(folder: Path) -> dict[str, str]:
    lines = (folder / "Info.cfg").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def _best_threshold_dice(image: np.ndarray, mask: np.ndarray, upper: float = np.inf) -> float:
    """Highest Dice of ``threshold < image < upper`` against ``mask`` over all thresholds."""
    best = 0.0
    inside = image < upper
    for threshold in np.unique(np.percentile(image[inside], np.linspace(1, 99.9, 300))):
        pred = (image > threshold) & inside
        best = max(best, 2.0 * (pred & mask).sum() / (pred.sum() + mask.sum()))
    return best


def _acdc_patients(root: Path) -> list[Path]:
    return sorted(root.glob("*/patient*"), key=lambda p: p.name)


# ---------------------------------------------------------------------------------------------- ACDC
@pytest.fixture(scope="module")
def acdc_root(phantom_factory) -> Path:
    return phantom_factory("acdc")


def test_acdc_layout_and_info(acdc_root):
    assert sorted(p.name for p in acdc_root.iterdir()) == ["testing", "training"]
    training = [p.name for p in sorted((acdc_root / "training").iterdir())]
    assert training == [f"patient{i:03d}" for i in range(1, 9)]
    assert [p.name for p in sorted((acdc_root / "testing").iterdir())] == ["patient009", "patient010"]
    groups = set()
    for folder in _acdc_patients(acdc_root):
        text = (folder / "Info.cfg").read_text()
        assert [line.split(":")[0] for line in text.splitlines()] == ACDC_KEYS
        info = _info(folder)
        ed, es, frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert ed == 1 and 1 < es < frames and 8 <= frames <= 12
        assert re.fullmatch(r"\d+\.\d", info["Height"]) and re.fullmatch(r"\d+\.\d", info["Weight"])
        groups.add(info["Group"])
        p = folder.name
        frames_files = {f"{p}_frame{f:02d}{suffix}.nii.gz" for f in (ed, es) for suffix in ("", "_gt")}
        expected = {"Info.cfg", f"{p}_4d.nii.gz"} | frames_files
        assert {f.name for f in folder.iterdir()} == expected
    assert groups == {"DCM", "HCM", "MINF", "NOR", "RV"}


def test_acdc_volumes_dtypes_geometry_and_labels(acdc_root):
    for folder in _acdc_patients(acdc_root):
        info, p = _info(folder), folder.name
        cine = read_volume(folder / f"{p}_4d.nii.gz")
        assert cine.array.dtype == np.int16 and cine.array.ndim == 4
        assert cine.array.shape[0] == int(info["NbFrame"])
        nz, ny, nx = cine.array.shape[1:]
        assert 6 <= nz <= 10 and 112 <= ny <= 144 and 112 <= nx <= 144
        geo = cine.geometry
        sx, sy, sz = geo.spacing
        assert sx == pytest.approx(sy) and 1.4 <= sx <= 1.8 and 5.0 <= sz <= 10.0
        assert sz >= 3 * sx  # strongly anisotropic like the real short-axis stacks
        direction = geo.direction_matrix
        assert np.linalg.det(direction) == pytest.approx(1.0, abs=1e-4)
        assert np.abs(direction - np.diag(np.diag(direction))).max() > 0.1  # oblique
        assert np.linalg.norm(geo.origin) > 1.0
        for frame in (int(info["ED"]), int(info["ES"])):
            image = read_volume(folder / f"{p}_frame{frame:02d}.nii.gz")
            gt = read_volume(folder / f"{p}_frame{frame:02d}_gt.nii.gz")
            assert image.array.dtype == np.int16 and gt.array.dtype == np.uint8
            np.testing.assert_array_equal(image.array, cine.array[frame - 1])
            assert image.geometry.almost_equal(geo) and gt.geometry.almost_equal(geo)
            assert set(np.unique(gt.array)) == {0, 1, 2, 3}


def test_acdc_anatomy_contracts_and_tapers(acdc_root):
    apex_rv_shorter = 0
    for folder in _acdc_patients(acdc_root):
        info, p = _info(folder), folder.name
        ed = read_volume(folder / f"{p}_frame01_gt.nii.gz").array
        es = read_volume(folder / f"{p}_frame{int(info['ES']):02d}_gt.nii.gz").array
        assert (es == 3).sum() < 0.95 * (ed == 3).sum()  # the LV cavity empties in systole
        lv_area = (ed == 3).sum(axis=(1, 2))
        slices = np.flatnonzero(lv_area)
        assert lv_area[slices[0]] > 2 * lv_area[slices[-1]]  # base larger than apex
        last_rv = np.flatnonzero((ed == 1).sum(axis=(1, 2)))[-1]
        assert last_rv <= slices[-1]
        apex_rv_shorter += last_rv < slices[-1]
        # The myocardium surrounds the cavity: every LV voxel's in-plane neighbours are LV or MYO.
        lv = ed == 3
        ring = np.zeros_like(lv)
        ring[:, 1:, :] |= lv[:, :-1, :]
        ring[:, :-1, :] |= lv[:, 1:, :]
        ring[:, :, 1:] |= lv[:, :, :-1]
        ring[:, :, :-1] |= lv[:, :, 1:]
        assert set(np.unique(ed[ring & ~lv])) <= {2}
    assert apex_rv_shorter >= 5  # the RV usually ends before the LV apex


def test_acdc_single_threshold_cannot_segment_lv(acdc_root):
    """RV blood, atria, aorta and fat are as bright as the LV pool; bias and noise blur the rest."""
    for folder in _acdc_patients(acdc_root):
        image = read_volume(folder / f"{folder.name}_frame01.nii.gz").array.astype(float)
        gt = read_volume(folder / f"{folder.name}_frame01_gt.nii.gz").array
        assert _best_threshold_dice(image, gt == 3) < 0.9


def test_acdc_deterministic_and_independent_cases(tmp_path, acdc_root):
    acdc.generate(tmp_path / "a", cases=2, seed=0)
    acdc.generate(tmp_path / "b", cases=2, seed=0)
    acdc.generate(tmp_path / "c", cases=2, seed=1)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["training"]  # round(80 % of 2) = 2
    files = sorted(f.relative_to(tmp_path / "a") for f in (tmp_path / "a").rglob("*.nii.gz"))
    for rel in files:
        a, b = read_volume(tmp_path / "a" / rel), read_volume(tmp_path / "b" / rel)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.geometry.almost_equal(b.geometry)
    # A patient depends only on (seed, index), not on how many patients the set holds.
    ours = read_volume(tmp_path / "a" / "training" / "patient001" / "patient001_4d.nii.gz").array
    default = read_volume(acdc_root / "training" / "patient001" / "patient001_4d.nii.gz").array
    np.testing.assert_array_equal(ours, default)
    other = read_volume(tmp_path / "c" / "training" / "patient001" / "patient001_4d.nii.gz").array
    assert other.shape != ours.shape or not np.array_equal(other, ours)


def test_acdc_split_sizes_progress_and_options(tmp_path):
    calls = []
    acdc.generate(tmp_path / "one", cases=1, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["training"]
    assert (tmp_path / "one" / "training" / "patient001" / "Info.cfg").exists()
    with pytest.raises(ValueError, match="unknown ACDC phantom option"):
        acdc.generate(tmp_path / "bad", cases=1, frames=30)


# ---------------------------------------------------------------------------------------------- BHSD
@pytest.fixture(scope="module")
def bhsd_root(phantom_factory) -> Path:
    return phantom_factory("bhsd")


def _bhsd_pairs(root: Path) -> list[tuple[Path, Path]]:
    return [(f, root / "ground truths" / f.name) for f in sorted((root / "images").iterdir())]


def test_bhsd_layout(bhsd_root):
    assert sorted(p.name for p in bhsd_root.iterdir()) == ["ground truths", "images", "unlabeled"]
    images = sorted(p.name for p in (bhsd_root / "images").iterdir())
    assert len(images) == bhsd.DEFAULT_CASES and all(BHSD_ID.match(n) for n in images)
    assert sorted(p.name for p in (bhsd_root / "ground truths").iterdir()) == images
    unlabeled = sorted(p.name for p in (bhsd_root / "unlabeled").iterdir())
    assert len(unlabeled) == bhsd.DEFAULT_CASES and all(BHSD_ID.match(n) for n in unlabeled)
    assert not set(unlabeled) & set(images)


def test_bhsd_volumes_dtypes_geometry_and_hu(bhsd_root):
    files = [f for pair in _bhsd_pairs(bhsd_root) for f in pair] + sorted((bhsd_root / "unlabeled").iterdir())
    for file in files:
        volume = read_volume(file)
        geo = volume.geometry
        nz, ny, nx = volume.array.shape
        assert 20 <= nz <= 32 and (ny, nx) == (128, 128)
        assert geo.spacing[2] == pytest.approx(5.0, abs=1e-4) and 0.9 <= geo.spacing[0] <= 1.2
        assert geo.spacing[0] == pytest.approx(geo.spacing[1])
        direction = geo.direction_matrix
        assert np.linalg.det(direction) == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(direction[:, 0], [1, 0, 0], atol=1e-5)  # tilt only about x
        assert np.degrees(np.arccos(np.clip(direction[2, 2], -1, 1))) <= 20.0 + 1e-3
        assert np.linalg.norm(geo.origin) > 1.0
    for image_file, gt_file in _bhsd_pairs(bhsd_root):
        image, gt = read_volume(image_file), read_volume(gt_file)
        assert image.array.dtype == np.int16 and gt.array.dtype == np.uint8
        assert gt.array.shape == image.array.shape and gt.geometry.almost_equal(image.geometry)
        assert set(np.unique(gt.array)) <= {0, 1, 2, 3, 4, 5}
        assert image.array.min() <= -990 and image.array.max() >= 1000  # air and skull
        brain_like = image.array[(image.array > 15) & (image.array < 60)]
        assert brain_like.size > 0.1 * image.array.size


def test_bhsd_lesion_mix(bhsd_root):
    seen, lesion_free = set(), 0
    for _, gt_file in _bhsd_pairs(bhsd_root):
        values = set(np.unique(read_volume(gt_file).array).tolist()) - {0}
        seen |= values
        lesion_free += not values
    assert seen == {1, 2, 3, 4, 5}
    assert 1 <= lesion_free <= bhsd.DEFAULT_CASES // 2


def test_bhsd_hemorrhage_overlaps_brain_intensity(bhsd_root):
    """Blood is only slightly denser than cortex: no HU window isolates it."""
    lesion_hu, tissue_hu = [], []
    for image_file, gt_file in _bhsd_pairs(bhsd_root):
        image = read_volume(image_file).array.astype(float)
        gt = read_volume(gt_file).array
        if not gt.any():
            continue
        assert _best_threshold_dice(image, gt > 0, upper=120.0) < 0.5
        lesion_hu.append(image[gt > 0])
        tissue_hu.append(image[(gt == 0) & (image > 0) & (image < 100)])
    lesion, tissue = np.concatenate(lesion_hu), np.concatenate(tissue_hu)
    low, high = np.percentile(tissue, [1, 99])
    assert 50 <= np.median(lesion[lesion < 120]) <= 90
    assert np.mean((lesion >= low) & (lesion <= high)) > 0.3


def test_bhsd_deterministic_and_options(tmp_path, bhsd_root):
    bhsd.generate(tmp_path / "a", cases=2, seed=0, unlabeled=1)
    bhsd.generate(tmp_path / "b", cases=2, seed=0, unlabeled=1)
    bhsd.generate(tmp_path / "c", cases=2, seed=5, unlabeled=0)
    names_a = sorted(f.relative_to(tmp_path / "a") for f in (tmp_path / "a").rglob("*.nii.gz"))
    names_b = sorted(f.relative_to(tmp_path / "b") for f in (tmp_path / "b").rglob("*.nii.gz"))
    assert names_a == names_b and len(names_a) == 5
    for rel in names_a:
        a, b = read_volume(tmp_path / "a" / rel), read_volume(tmp_path / "b" / rel)
        np.testing.assert_array_equal(a.array, b.array)
        assert a.geometry.almost_equal(b.geometry)
    # Labeled volume 0 is the same whatever the set size: same name and voxels as in the default set.
    first = sorted((tmp_path / "a" / "images").iterdir())
    default = {p.name for p in (bhsd_root / "images").iterdir()}
    assert {p.name for p in first} <= default
    for f in first:
        np.testing.assert_array_equal(read_volume(f).array, read_volume(bhsd_root / "images" / f.name).array)
    other = sorted((tmp_path / "c" / "images").iterdir())
    assert not {p.name for p in other} & {p.name for p in first}
    a0, c0 = read_volume(first[0]).array, read_volume(other[0]).array
    assert a0.shape != c0.shape or not np.array_equal(a0, c0)
    assert not (tmp_path / "c" / "unlabeled").exists()
    with pytest.raises(ValueError, match="only option is 'unlabeled'"):
        bhsd.generate(tmp_path / "bad", cases=1, noise=3)
