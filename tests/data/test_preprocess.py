"""Fingerprint, plan, normalisation, resampling and the inverse of preprocessing, on constructed cases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medsam_kit.data.case import Case
from medsam_kit.data.datasets import ACDC, BHSD, BRATS, EM
from medsam_kit.data.fingerprint import DatasetFingerprint, compute_fingerprint
from medsam_kit.data.preprocess import (
    ChannelNormalization,
    PreprocessingPlan,
    Preprocessor,
    invert_preprocessing,
    make_plan,
    normalize_channel,
    resample_to_spacing,
)
from medsam_kit.io.geometry import Geometry

# An oblique direction (rotation about z by 30°, then about x by 20°): columns are index axes.
_C30, _S30, _C20, _S20 = np.cos(np.pi / 6), np.sin(np.pi / 6), np.cos(np.pi / 9), np.sin(np.pi / 9)
OBLIQUE = np.array([[1, 0, 0], [0, _C20, -_S20], [0, _S20, _C20]]) @ np.array(
    [[_C30, -_S30, 0], [_S30, _C30, 0], [0, 0, 1]]
)


def _ellipsoid_labels(shape, spacing_zyx, centre_mm, radii_mm) -> np.ndarray:
    """Nested ellipsoids (labels 1, 2) defined in mm, so they look alike at any spacing."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing_zyx, strict=True)], indexing="ij")
    r = sum(((g - c) / rad) ** 2 for g, c, rad in zip(grids, centre_mm, radii_mm, strict=True))
    label = np.zeros(shape, np.uint8)
    label[r <= 1.0] = 1
    label[r <= 0.4] = 2
    return label


def _case(
    case_id="c0",
    shape=(6, 40, 48),
    spacing=(1.0, 1.0, 4.0),
    direction=None,
    modality_spec=ACDC,
    seed=0,
    labeled=True,
    radii_yx=(12.0, 14.0),
) -> Case:
    rng = np.random.default_rng(seed)
    geometry = Geometry(
        spacing, (10.0, -5.0, 2.0), tuple(map(tuple, direction if direction is not None else np.eye(3)))
    )
    spacing_zyx = geometry.spacing_zyx
    extent = [n * s for n, s in zip(shape, spacing_zyx, strict=True)]
    label = _ellipsoid_labels(shape, spacing_zyx, [e / 2 for e in extent], [extent[0] / 2.2, *radii_yx])
    channels = len(modality_spec.channel_names)
    image = rng.normal(100.0, 10.0, (channels, *shape)).astype(np.float32) + 50.0 * label
    return Case(
        case_id,
        image,
        geometry,
        modality_spec.channel_names,
        label if labeled else None,
        dict(modality_spec.label_names),
    )


# ----------------------------------------------------------------------------------- fingerprint
def test_fingerprint_statistics_and_median_spacing_are_exact_on_small_foreground():
    a = Case(
        "a",
        np.zeros((1, 3, 4, 5), np.float32),
        Geometry((1.0, 1.0, 5.0)),
        ("ct",),
        np.zeros((3, 4, 5), np.uint8),
        dict(BHSD.label_names),
    )
    b = Case(
        "b",
        np.zeros((1, 2, 4, 4), np.float32),
        Geometry((0.5, 0.6, 3.0)),
        ("ct",),
        np.zeros((2, 4, 4), np.uint8),
        dict(BHSD.label_names),
    )
    c = Case("c", np.full((1, 2, 2, 2), 7.0, np.float32), Geometry((2.0, 2.0, 10.0)), ("ct",), None)
    a.label[1, 1:3, 1:4] = 2  # six voxels with values 10..60
    a.image[0, 1, 1:3, 1:4] = np.arange(10, 70, 10).reshape(2, 3)
    b.label[0, 0, :2] = 1
    b.image[0, 0, 0, :2] = [-20.0, 100.0]
    fingerprint = compute_fingerprint([a, b, c], BHSD)
    values = np.array([10, 20, 30, 40, 50, 60, -20, 100], dtype=float)
    stats = fingerprint.intensity[0]
    assert fingerprint.intensity_source == "foreground"  # the unlabeled case does not contribute
    assert stats["num_samples"] == 8
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std())
    assert stats["percentile_00_5"] == pytest.approx(np.percentile(values, 0.5))
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(values, 99.5))
    assert (stats["min"], stats["max"], stats["median"]) == (-20.0, 100.0, 35.0)
    assert fingerprint.median_spacing == (1.0, 1.0, 5.0)
    assert [c.shape_zyx for c in fingerprint.cases] == [(3, 4, 5), (2, 4, 4), (2, 2, 2)]
    assert [c.labeled for c in fingerprint.cases] == [True, True, False]
    assert fingerprint.modality == "CT" and fingerprint.dataset == "bhsd"


def test_fingerprint_json_is_readable_and_round_trips(tmp_path):
    fingerprint = compute_fingerprint(
        [_case("x", seed=1), _case("y", spacing=(1.5, 1.5, 8.0), seed=2)], ACDC, samples_per_case=500, seed=3
    )
    path = fingerprint.save(tmp_path / "fingerprint.json")
    data = json.loads(path.read_text())
    assert data["cases"][1]["spacing"] == [1.5, 1.5, 8.0]
    assert data["label_names"]["3"] == "LV"
    assert data["intensity"][0]["num_samples"] == 1000
    assert DatasetFingerprint.load(path) == fingerprint
    # Deterministic for a seed.
    again = compute_fingerprint(
        [_case("x", seed=1), _case("y", spacing=(1.5, 1.5, 8.0), seed=2)], ACDC, samples_per_case=500, seed=3
    )
    assert again.intensity == fingerprint.intensity


def test_fingerprint_of_unlabeled_data_uses_nonzero_voxels():
    image = np.zeros((1, 2, 3, 3), np.float32)
    image[0, 0, 0, :3] = [1.0, 2.0, 3.0]
    fingerprint = compute_fingerprint([Case("u", image, Geometry(), ("em",))], EM)
    assert fingerprint.intensity_source == "nonzero"
    assert fingerprint.intensity[0]["mean"] == pytest.approx(2.0)
    assert fingerprint.cases[0].nonzero_fraction == pytest.approx(3 / 18)


# ----------------------------------------------------------------------------------- normalisation
def test_ct_window_scales_to_unit_range_and_clips():
    channel = np.array([-1000.0, -10.0, 0.0, 40.0, 80.0, 300.0, 3000.0], np.float32).reshape(1, 1, 7)
    out, used = normalize_channel(channel, ChannelNormalization("ct_window", window=(0.0, 80.0)))
    np.testing.assert_allclose(out.ravel(), [0, 0, 0, 0.5, 1, 1, 1], atol=1e-6)
    assert out.dtype == np.float32 and used == {"window": [0.0, 80.0]}


def test_ct_plan_default_window_from_foreground_percentiles_and_user_window():
    generic_ct = dataclasses.replace(BHSD, name="generic_ct", ct_window=None)  # a CT dataset with no own window
    cases = [_case(f"c{i}", modality_spec=generic_ct, seed=i) for i in range(2)]
    fingerprint = compute_fingerprint(cases, generic_ct)
    plan = make_plan(fingerprint)
    stats = fingerprint.intensity[0]
    assert plan.normalization[0].window == (stats["percentile_00_5"], stats["percentile_99_5"])
    out = Preprocessor(plan).apply(cases[0]).image
    assert out.min() == 0.0 and out.max() == 1.0  # background (~100 HU) is below the window; outliers clip
    brain = make_plan(fingerprint, ct_window=(0, 80))
    assert brain.normalization[0].window == (0.0, 80.0)
    assert brain.digest() != plan.digest()
    with pytest.raises(ValueError, match="CT window"):
        make_plan(compute_fingerprint([_case()], ACDC), ct_window=(0, 80))
    # BHSD's foreground is haemorrhage only: its spec's subdural window is the default, not the percentiles
    bhsd_plan = make_plan(compute_fingerprint([_case(f"c{i}", modality_spec=BHSD, seed=i) for i in range(2)], BHSD))
    assert bhsd_plan.normalization[0].window == BHSD.ct_window == (-15.0, 115.0)


def test_mri_zscore_of_foreground_with_background_zeros_kept():
    rng = np.random.default_rng(0)
    channel = np.zeros((8, 32, 32), np.float32)
    channel[2:6, 8:24, 8:24] = rng.gamma(4.0, 50.0, (4, 16, 16))
    channel[3, 10, 10] = 1e5  # an outlier the 99.5 percentile clip must tame
    out, used = normalize_channel(
        channel, ChannelNormalization("zscore", percentiles=(0.5, 99.5), use_nonzero_mask=True)
    )
    foreground = channel != 0
    assert np.all(out[~foreground] == 0)
    assert out[foreground].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[foreground].std() == pytest.approx(1.0, abs=1e-4)
    assert out[3, 10, 10] == pytest.approx(out[foreground].max())  # clipped to the 99.5th percentile
    assert used["clip"][1] < 1e5


def test_mri_plan_uses_nonzero_mask_only_for_mostly_empty_images():
    brain = _case("b", shape=(6, 40, 48), modality_spec=BRATS)
    brain.image[:, :, :, :30] = 0  # skull-stripped: ~60 % of voxels are zero
    assert make_plan(compute_fingerprint([brain], BRATS)).normalization[0].use_nonzero_mask
    assert not make_plan(compute_fingerprint([_case()], ACDC)).normalization[0].use_nonzero_mask


def test_em_percentile_scaling_to_unit_range():
    rng = np.random.default_rng(1)
    channel = rng.integers(0, 256, (4, 30, 30)).astype(np.float32)
    channel[0, 0, 0] = 5000.0
    out, _ = normalize_channel(channel, ChannelNormalization("percentile_scale", percentiles=(0.5, 99.5)))
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out == 1.0) < 0.01  # only the top 0.5 % saturate


# ----------------------------------------------------------------------------------- resampling
def test_resample_keeps_origin_direction_extent_and_world_positions():
    geometry = Geometry((0.7, 0.9, 3.0), (12.0, -30.0, 5.5), tuple(map(tuple, OBLIQUE)))
    shape = (5, 37, 43)
    # Image = world x coordinate of each voxel: linear interpolation must reproduce it exactly.
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = geometry.index_to_world(np.stack([i, j, k], axis=-1))
    image = world[..., 0].astype(np.float32)
    out, new = resample_to_spacing(image, geometry, (1.1, 1.1, 3.0))
    assert new.origin == pytest.approx(geometry.origin)
    np.testing.assert_allclose(new.direction_matrix, geometry.direction_matrix, atol=1e-12)
    assert new.spacing == pytest.approx((1.1, 1.1, 3.0))
    assert out.shape == (5, round(37 * 0.9 / 1.1), round(43 * 0.7 / 1.1))
    for axis, (n_old, n_new) in enumerate(zip(shape[::-1], out.shape[::-1], strict=True)):
        assert abs(n_new * new.spacing[axis] - n_old * geometry.spacing[axis]) <= new.spacing[axis] / 2
    k, j, i = np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij")
    expected = new.index_to_world(np.stack([i, j, k], axis=-1))[..., 0]
    inside = (j * 1.1 <= 36 * 0.9) & (i * 1.1 <= 42 * 0.7)  # beyond the last old voxel it extrapolates flat
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-3)


def test_resampled_labels_stay_in_the_label_set():
    case = _case(shape=(4, 50, 50), spacing=(0.8, 0.8, 5.0), direction=OBLIQUE)
    case.label[case.label == 2] = 5  # a gap in the values must not be filled by interpolation
    label, _ = resample_to_spacing(case.label, case.geometry, (1.3, 1.3, 5.0), is_label=True)
    assert label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 5}


# ----------------------------------------------------------------------------------- apply / invert
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_preprocessor_output_types_and_recorded_geometry():
    case = _case(spacing=(0.8, 0.8, 5.0), direction=OBLIQUE)
    plan = make_plan(compute_fingerprint([case], ACDC), target_spacing_xy=1.2)
    out = Preprocessor(plan).apply(case)
    assert out.image.dtype == np.float32 and out.label.dtype == np.uint8
    assert out.geometry.spacing == pytest.approx((1.2, 1.2, 5.0))
    info = out.meta["preprocessing"]
    assert Geometry.from_dict(info["original_geometry"]) == case.geometry
    assert info["original_shape_zyx"] == [6, 40, 48] and info["shape_zyx"] == list(out.spatial_shape)
    assert info["plan_digest"] == plan.digest() and info["resampled"] is True
    with pytest.raises(ValueError, match="channels"):
        Preprocessor(plan).apply(_case(modality_spec=BRATS))


def test_invert_is_exact_without_resampling():
    case = _case(spacing=(0.8, 0.8, 5.0), direction=OBLIQUE)
    plan = make_plan(compute_fingerprint([case], ACDC))  # median spacing = the case's own: identity
    out = Preprocessor(plan).apply(case)
    assert out.meta["preprocessing"]["resampled"] is False
    np.testing.assert_array_equal(invert_preprocessing(out.label, out.meta), case.label)


def test_invert_is_exact_after_reorientation():
    permuted = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # slices along L/R
    case = _case(spacing=(0.8, 0.9, 5.0), direction=permuted)
    plan = make_plan(compute_fingerprint([case], ACDC), orientation="LPS")
    assert plan.target_spacing_xy == (5.0, 0.8)  # the oriented case's own in-plane spacing
    out = Preprocessor(plan).apply(case)
    np.testing.assert_allclose(out.geometry.direction_matrix, np.eye(3))
    assert out.spatial_shape == (40, 48, 6)  # Z = S (old y), Y = P (old x, flipped), X = L (old z)
    np.testing.assert_array_equal(invert_preprocessing(out.label, out.meta), case.label)


def test_invert_after_inplane_resample_has_high_dice():
    # Heart-sized objects (radii 25-30 mm) resampled 0.7 -> 1.2 mm, as for a cine MRI dataset.
    case = _case(shape=(6, 100, 110), spacing=(0.7, 0.7, 5.0), direction=OBLIQUE, radii_yx=(25.0, 30.0))
    plan = make_plan(compute_fingerprint([case], ACDC), target_spacing_xy=1.2)
    out = Preprocessor(plan).apply(case)
    assert out.spatial_shape == (6, 58, 64)
    back = invert_preprocessing(out.label, out.meta)
    assert back.shape == case.label.shape
    for value in (1, 2):
        assert _dice(back == value, case.label == value) > 0.95
    with pytest.raises(ValueError, match="preprocessed grid"):
        invert_preprocessing(case.label, out.meta)


def test_plan_json_round_trip(tmp_path):
    plan = make_plan(
        compute_fingerprint([_case(modality_spec=BHSD)], BHSD),
        target_spacing_xy=(0.5, 0.6),
        ct_window=(-10, 90),
        orientation="lps",
    )
    loaded = PreprocessingPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan and loaded.digest() == plan.digest()
    assert loaded.orientation == "LPS" and loaded.target_spacing_xy == (0.5, 0.6)
    with pytest.raises(ValueError, match="DICOM code"):
        make_plan(compute_fingerprint([_case()], ACDC), orientation="LPX")
