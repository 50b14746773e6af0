"""BraTS and EM phantoms: raw layout, dtypes, labels, geometry, contrasts, determinism, difficulty."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsam_kit.data.phantoms import brats, em, generate_phantoms
from medsam_kit.io import read_volume

MODALITIES_2023 = ("t1n", "t1c", "t2w", "t2f")
MODALITIES_2021 = ("t1", "t1ce", "t2", "flair")


def _read_brats_case(folder, case_id, sep, modalities):
    images = [read_volume(folder / f"{case_id}{sep}{m}.nii.gz") for m in modalities]
    seg = read_volume(folder / f"{case_id}{sep}seg.nii.gz")
    return images, seg


def _load_all_2023(root):
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images, seg = _read_brats_case(folder, folder.name, "-", MODALITIES_2023)
        cases.append((np.stack([v.array for v in images]), seg.array))
    return cases


# ----------------------------------------------------------------------------------------- BraTS
def test_brats_2023_layout_dtypes_and_labels(phantom_factory):
    root = phantom_factory("brats")
    folders = sorted(p.name for p in root.iterdir())
    assert folders == [f"BraTS-GLI-{i:05d}-000" for i in range(brats.DEFAULT_CASES)]
    labels = set()
    for name in folders:
        files = sorted(p.name for p in (root / name).iterdir())
        assert files == sorted(f"{name}-{s}.nii.gz" for s in (*MODALITIES_2023, "seg"))
        images, seg = _read_brats_case(root / name, name, "-", MODALITIES_2023)
        assert seg.array.dtype == np.uint8
        assert all(v.array.dtype == np.int16 for v in images)
        labels |= set(np.unique(seg.array).tolist())
    assert labels == {0, 1, 2, 3}


def test_brats_2021_layout_and_labels(phantom_factory):
    root = phantom_factory("brats2021", cases=2)
    assert sorted(p.name for p in root.iterdir()) == ["BraTS2021_00000", "BraTS2021_00001"]
    labels = set()
    for folder in sorted(root.iterdir()):
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(f"{folder.name}_{s}.nii.gz" for s in (*MODALITIES_2021, "seg"))
        _, seg = _read_brats_case(folder, folder.name, "_", MODALITIES_2021)
        labels |= set(np.unique(seg.array).tolist())
    assert 3 not in labels and 4 in labels and labels <= {0, 1, 2, 4}
    # Same content as the 2023 naming, only the ET value changes.
    ref = brats.make_case(np.random.default_rng([0, 1]), et_value=3)[1]
    assert np.array_equal(np.where(ref == 3, 4, ref), seg.array)


def test_brats_modalities_share_grid_and_geometry(phantom_factory):
    root = phantom_factory("brats")
    for folder in sorted(root.iterdir()):
        images, seg = _read_brats_case(folder, folder.name, "-", MODALITIES_2023)
        assert seg.array.shape == brats.SHAPE_ZYX == (72, 96, 96)
        for image in images:
            assert image.array.shape == seg.array.shape
            assert image.geometry.almost_equal(seg.geometry)
        assert np.allclose(seg.geometry.spacing, (1.0, 1.0, 1.0))
        assert np.allclose(seg.geometry.origin, (0.0, -95.0, 0.0), atol=1e-5)  # BraTS: (0, -239, 0)
        assert np.allclose(seg.geometry.direction_matrix, np.eye(3))


def test_brats_skull_stripped(phantom_factory):
    for images, seg in _load_all_2023(phantom_factory("brats")):
        brain = images[0] > 0
        for channel in images[1:]:
            assert np.array_equal(channel > 0, brain)  # one brain mask, zero elsewhere in every modality
        assert not (seg[~brain]).any()
        assert 0.15 < brain.mean() < 0.5
        _, count = ndimage.label(brain)
        assert count == 1
        for axis in range(3):  # nothing touches the border of the field of view
            assert not np.take(brain, [0, -1], axis=axis).any()


def test_brats_contrasts(phantom_factory):
    seen_ncr = seen_ncr_free = 0
    for images, seg in _load_all_2023(phantom_factory("brats")):
        t1n, t1c, t2w, t2f = images.astype(float)
        brain = images[0] > 0
        et, ed, ncr, normal = seg == 3, seg == 2, seg == 1, brain & (seg == 0)
        assert ed.any()
        assert t2f[ed].mean() > 1.25 * t2f[normal].mean()  # edema bright on FLAIR
        assert t2w[ed].mean() > 1.2 * t2w[normal & (t2w < np.percentile(t2w[brain], 90))].mean()
        if et.any():
            assert t1c[et].mean() > 1.2 * t1c[ed].mean()  # enhancing tumour bright on T1c only
            assert t1n[et].mean() < t1n[normal].mean()
        if ncr.any() and et.any():
            assert t1c[ncr].mean() < 0.6 * t1c[et].mean()  # necrosis dark on T1c ...
            assert t2w[ncr].mean() > t2w[normal].mean()  # ... and bright on T2
            seen_ncr += 1
        elif et.any():
            seen_ncr_free += 1
    assert seen_ncr >= 1 and seen_ncr_free >= 1  # sometimes with, sometimes without necrosis


def test_brats_has_confusable_non_tumour_voxels(phantom_factory):
    """Enhancing choroid plexus/veins (T1c) and WM hyperintensities (FLAIR) outside the tumour are
    as bright as the tumour, so a global threshold cannot segment it."""
    for images, seg in _load_all_2023(phantom_factory("brats")):
        t1c, t2f = images[1].astype(float), images[3].astype(float)
        brain, outside = images[0] > 0, (images[0] > 0) & (seg == 0)
        far = outside & (ndimage.distance_transform_edt(seg == 0) > 3)  # away from the tumour border
        if (seg == 3).any():
            assert (far & (t1c > np.median(t1c[seg == 3]))).sum() >= 5
        assert (far & (t2f > np.median(t2f[seg == 2]))).sum() >= 5
        assert brain.sum() > (seg > 0).sum()


def test_brats_tumours_vary(phantom_factory):
    cases = _load_all_2023(phantom_factory("brats"))
    volumes = [int((seg > 0).sum()) for _, seg in cases]
    centres = np.array([ndimage.center_of_mass(seg > 0) for _, seg in cases])
    assert max(volumes) > 3 * min(volumes)
    assert np.ptp(centres, axis=0).max() > 15  # voxels (mm)


def test_brats_deterministic_per_case(phantom_factory, tmp_path):
    reference = phantom_factory("brats")
    calls = []
    generate_phantoms("brats", tmp_path, cases=1, seed=0, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 1)]
    name = "BraTS-GLI-00000-000"
    for suffix in (*MODALITIES_2023, "seg"):
        a = read_volume(tmp_path / name / f"{name}-{suffix}.nii.gz").array
        b = read_volume(reference / name / f"{name}-{suffix}.nii.gz").array
        assert np.array_equal(a, b)
    # Case 0 of a 1-case run equals case 0 of the 6-case run: a case depends only on (seed, index).
    # Another seed gives another case.
    images, seg = _load_all_2023(reference)[0]
    other_images, other_seg = brats.make_case(np.random.default_rng([1, 0]))
    assert not np.array_equal(other_seg, seg) and not np.array_equal(other_images, images)


def test_brats_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="naming"):
        brats.generate(tmp_path, cases=1, naming="2019")
    with pytest.raises(ValueError, match="colour"):
        brats.generate(tmp_path, cases=1, colour="red")


# -------------------------------------------------------------------------------------------- EM
def _em_volumes(root):
    """(name, image, mask bool, volume) for the four EM volumes."""
    out = []
    for split in ("training", "testing"):
        image = read_volume(root / "lucchi" / f"{split}.tif")
        mask = read_volume(root / "lucchi" / f"{split}_groundtruth.tif")
        out.append((f"lucchi/{split}", image, mask))
    for split in ("train", "val"):
        out.append((f"mitoem/{split}", read_volume(root / "mitoem" / split / "im"),
                    read_volume(root / "mitoem" / split / "mito")))
    return out


def test_em_layout(phantom_factory):
    root = phantom_factory("em")
    assert sorted(p.name for p in root.iterdir()) == ["lucchi", "mitoem"]
    assert sorted(p.name for p in (root / "lucchi").iterdir()) == [
        "testing.tif", "testing_groundtruth.tif", "training.tif", "training_groundtruth.tif"]
    assert sorted(p.name for p in (root / "mitoem").iterdir()) == ["train", "val"]
    for split in ("train", "val"):
        folder = root / "mitoem" / split
        assert sorted(p.name for p in folder.iterdir()) == ["im", "mito"]
        assert sorted(p.name for p in (folder / "im").iterdir()) == [f"im{k:04d}.png" for k in range(16)]
        assert sorted(p.name for p in (folder / "mito").iterdir()) == [f"seg{k:04d}.tif" for k in range(16)]


def test_em_dtypes_labels_and_geometry(phantom_factory):
    volumes = _em_volumes(phantom_factory("em"))
    for name, image, label in volumes:
        assert image.array.dtype == np.uint8
        assert image.array.shape == label.array.shape
        if name.startswith("lucchi"):
            assert image.array.shape == (24, 192, 192)
            assert label.array.dtype == np.uint8
            assert set(np.unique(label.array).tolist()) == {0, 255}
            assert np.allclose(image.geometry.spacing, (5e-6,) * 3, rtol=1e-6, atol=0)
            assert np.allclose(label.geometry.spacing, (5e-6,) * 3, rtol=1e-6, atol=0)
        else:
            assert image.array.shape == (16, 160, 160)
            assert label.array.dtype == np.uint16
            ids = np.unique(label.array)
            assert np.array_equal(ids, np.arange(ids.max() + 1)) and ids.max() >= 5  # consecutive ids
            # every instance is one connected object (one id per mitochondrion)
            for i in ids[1:]:
                assert ndimage.label(label.array == i)[1] == 1
            assert np.allclose(image.geometry.spacing, (8e-6, 8e-6, 30e-6), rtol=1e-6, atol=0)


def test_em_slice_geometry_steps_in_z(phantom_factory):
    folder = phantom_factory("em") / "mitoem" / "train" / "im"
    first, third = read_volume(folder / "im0000.png"), read_volume(folder / "im0002.png")
    assert np.isclose(third.geometry.origin[2] - first.geometry.origin[2], 2 * 30e-6, rtol=1e-6, atol=0)


def test_em_domains_differ(phantom_factory):
    (_, a, _), _, (_, b, _), _ = _em_volumes(phantom_factory("em"))
    assert not np.allclose(a.geometry.spacing, b.geometry.spacing, rtol=0.1, atol=0)
    assert b.geometry.spacing[2] / b.geometry.spacing[0] > 3  # B anisotropic, A isotropic
    assert a.geometry.spacing[2] == a.geometry.spacing[0]
    img_a, img_b = a.array.astype(float), b.array.astype(float)
    assert abs(img_a.mean() - img_b.mean()) > 10

    def noise(img):  # in-plane high-pass residual
        return (img - ndimage.gaussian_filter(img, (0, 1.5, 1.5))).std()

    assert noise(img_b) > 1.5 * noise(img_a)


def test_em_mitochondria_fraction_size_and_contrast(phantom_factory):
    sizes = {}
    for name, image, label in _em_volumes(phantom_factory("em")):
        mask = label.array > 0
        assert 0.03 < mask.mean() < 0.20, name
        img = image.array.astype(float)
        assert img[mask].mean() < img[~mask].mean() - 20  # dark organelles on bright background
        # mean in-plane area (pixels) of a mitochondrion profile
        areas = [np.bincount(ndimage.label(s)[0].ravel())[1:].mean() for s in mask if s.any()]
        sizes.setdefault(name.split("/")[0], []).append(np.mean(areas))
    assert np.mean(sizes["lucchi"]) > 2 * np.mean(sizes["mitoem"])  # size in pixels differs between domains


def test_em_global_threshold_is_not_enough(phantom_factory):
    for name, image, label in _em_volumes(phantom_factory("em")):
        mask = label.array > 0
        # Dice of "image < t" and "image >= t" for every t from cumulative histograms.
        fg = np.cumsum(np.bincount(image.array[mask], minlength=257))
        everything = np.cumsum(np.bincount(image.array.ravel(), minlength=257))
        dark = 2 * fg / (everything + mask.sum())
        bright = 2 * (fg[-1] - fg) / (everything[-1] - everything + mask.sum())
        assert max(dark.max(), bright.max()) < 0.8, name
        assert dark.max() > 0.3, name  # mitochondria are darker than most neuropil


def test_em_deterministic(phantom_factory):
    root = phantom_factory("em")
    # Each volume is a function of (seed, index) only: regenerating it gives the stored files.
    stored_image = read_volume(root / "lucchi" / "testing.tif").array
    stored_mask = read_volume(root / "lucchi" / "testing_groundtruth.tif").array
    image, instances = em.make_stack(np.random.default_rng([0, 1]), em.LUCCHI, em.LUCCHI.slices)
    assert np.array_equal(image, stored_image)
    assert np.array_equal(np.where(instances > 0, 255, 0), stored_mask)
    stored_b = read_volume(root / "mitoem" / "val" / "im").array
    image_b, _ = em.make_stack(np.random.default_rng([0, 3]), em.MITOEM, em.MITOEM.slices)
    assert np.array_equal(image_b, stored_b)
    other, _ = em.make_stack(np.random.default_rng([1, 3]), em.MITOEM, em.MITOEM.slices)
    assert not np.array_equal(other, image_b)


def test_em_rejects_unknown_option(tmp_path):
    with pytest.raises(ValueError, match="depth"):
        em.generate(tmp_path, depth=3)


@pytest.mark.slow
def test_em_cases_scale_depth(tmp_path):
    generate_phantoms("em", tmp_path, cases=2, seed=0)
    assert read_volume(tmp_path / "lucchi" / "training.tif").array.shape == (48, 192, 192)
    assert len(list((tmp_path / "mitoem" / "val" / "im").iterdir())) == 32
