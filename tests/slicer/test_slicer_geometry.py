"""MedSAMKitLib.geometry: IJK <-> RAS, markups -> prompt documents the server's parser accepts, label maps
-> segments."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import oblique_ijk_to_ras
from MedSAMKitLib.geometry import (
    RoiBox,
    as_matrix,
    geometry_to_matrix,
    grid_difference,
    ijk_to_ras,
    keep_values,
    matrix_to_geometry,
    prompt_document,
    ras_to_ijk,
    segment_id_table,
    segments_from_labelmap,
    shear,
    stack_channels,
)

from medsam_kit.io import Geometry
from medsam_kit.prompts.user_file import parse_prompts

SHAPE = (10, 40, 50)  # (Z, Y, X) = (K, J, I)
NAMES = {0: "background", 1: "LV", 2: "MYO"}


def parse(document, matrix):
    """What the server does with a document: medsam_kit's own parser, with the volume's LPS geometry."""
    return parse_prompts(document, SHAPE, Geometry.from_affine_ras(matrix), NAMES)


def volume_aligned_roi(matrix, center_ijk, half_voxels):
    """An ROI whose axes follow the volume's i, j, k, centred on a voxel, ``half_voxels`` voxels each way."""
    steps = np.linalg.norm(matrix[:3, :3], axis=0)
    axes = matrix[:3, :3] / steps
    return RoiBox(tuple(ijk_to_ras(center_ijk, matrix)), tuple(np.asarray(half_voxels) * steps),
                  tuple(map(tuple, axes)), "box")


# ------------------------------------------------------------------------------------------ matrices
def test_ijk_ras_round_trip_on_an_oblique_grid(oblique):
    rng = np.random.default_rng(0)
    ijk = np.concatenate([rng.integers(0, 50, (200, 3)), rng.uniform(-0.5, 49.5, (200, 3))])
    ras = ijk_to_ras(ijk, oblique)
    back = ras_to_ijk(ras, oblique)
    np.testing.assert_allclose(back, ijk, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.rint(back[:200]), ijk[:200])  # voxel indices come back exactly
    # Same placement as medsam_kit's LPS Geometry of the same grid (RAS = LPS with x, y negated).
    lps = Geometry.from_affine_ras(oblique).index_to_world(ijk)
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], rtol=0, atol=1e-9)


def test_geometry_dict_is_medsam_kits_lps_geometry(oblique):
    as_dict = matrix_to_geometry(oblique)
    reference = Geometry.from_affine_ras(oblique).to_dict()
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(as_dict[key], reference[key], rtol=0, atol=1e-12)
    np.testing.assert_allclose(geometry_to_matrix(as_dict), oblique, rtol=0, atol=1e-12)
    assert Geometry.from_dict(as_dict).almost_equal(Geometry.from_affine_ras(oblique), atol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4)), "affine"),
    (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
    (np.eye(3), "4x4"),
    (np.full((4, 4), np.nan), "finite"),
])
def test_bad_matrices_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        as_matrix(bad)


def test_shear_is_zero_for_oblique_grids_only(oblique):
    assert shear(oblique) < 1e-12
    sheared = oblique.copy()
    sheared[:3, 2] += 0.1 * sheared[:3, 0]
    assert shear(sheared) > 0.01


def test_grid_difference_tolerates_float32_headers_only(oblique):
    assert grid_difference(oblique, oblique.astype(np.float32).astype(float)) == ""
    moved = oblique.copy()
    moved[0, 3] += 0.5
    assert "origin" in grid_difference(oblique, moved)
    flipped = oblique.copy()
    flipped[:3, 0] *= -1
    assert "axes" in grid_difference(oblique, flipped)


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("coordinates", ["voxel", "world"])
def test_points_land_on_their_voxels(oblique, coordinates):
    include_ijk = np.array([[12.0, 30.0, 4.0], [13.4, 29.6, 4.3]])  # both nearest to slice 4
    exclude_ijk = np.array([[40.0, 5.0, 6.8]])  # nearest to slice 7
    document = prompt_document("LV", oblique, SHAPE, include_ras=ijk_to_ras(include_ijk, oblique),
                               exclude_ras=ijk_to_ras(exclude_ijk, oblique), coordinates=coordinates)
    assert document["coordinates"] == coordinates and document["format"] == "medsam-kit-prompts"
    assert document.get("space") == ("RAS" if coordinates == "world" else None)
    prompts = parse(document, oblique)
    assert prompts.labels() == [1] and prompts.slices(1) == [4, 7]
    np.testing.assert_allclose(prompts.get(1, 4).point_coords, include_ijk[:, :2], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(prompts.get(1, 4).point_labels, [1, 1])
    np.testing.assert_allclose(prompts.get(1, 7).point_coords, exclude_ijk[:, :2], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(prompts.get(1, 7).point_labels, [0])


@pytest.mark.parametrize("coordinates", ["voxel", "world"])
def test_volume_aligned_roi_is_the_voxel_box(oblique, coordinates):
    roi = volume_aligned_roi(oblique, [20, 24, 6], [4, 5, 0.5])  # edges at i 16..24, j 19..29
    document = prompt_document("MYO", oblique, SHAPE, rois=[roi], coordinates=coordinates)
    if coordinates == "voxel":
        np.testing.assert_allclose(document["labels"]["MYO"]["6"]["boxes"], [[16.5, 19.5, 24.5, 29.5]], atol=1e-9)
    (box,) = parse(document, oblique).get(2, 6).boxes
    np.testing.assert_allclose(box.as_tuple(), (16.5, 19.5, 24.5, 29.5), rtol=0, atol=1e-6)
    # The box covers the voxel columns 17..24 and rows 20..29 whose centres the ROI encloses.
    assert box.to_inclusive_pixels() == (16, 19, 24, 29)


def test_rotated_roi_becomes_the_index_box_that_encloses_it(oblique):
    axes = np.eye(3)  # aligned with RAS, so rotated 30 degrees (and tilted) against the volume
    roi = RoiBox(tuple(ijk_to_ras([25, 20, 5], oblique)), (6.0, 4.0, 1.0), tuple(map(tuple, axes)))
    document = prompt_document("LV", oblique, SHAPE, rois=[roi])
    (slice_key, entry), = document["labels"]["LV"].items()
    assert slice_key == "5"
    x0, y0, x1, y1 = entry["boxes"][0]
    corners = ras_to_ijk(roi.corners(), oblique)
    assert np.all(corners[:, 0] >= x0 - 0.5 - 1e-6) and np.all(corners[:, 0] <= x1 - 0.5 + 1e-6)
    assert np.all(corners[:, 1] >= y0 - 0.5 - 1e-6) and np.all(corners[:, 1] <= y1 - 0.5 + 1e-6)
    np.testing.assert_allclose([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()],
                               [x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5], atol=1e-6)  # tight (sent to 1e-6 voxel)
    world = prompt_document("LV", oblique, SHAPE, rois=[roi], coordinates="world")
    (box,) = parse(world, oblique).get(1, 5).boxes
    np.testing.assert_allclose(box.as_tuple(), (x0, y0, x1, y1), rtol=0, atol=1e-6)


def test_roi_reaching_past_the_volume_is_clipped(oblique):
    roi = volume_aligned_roi(oblique, [2, 38, 3], [6, 6, 0.5])
    document = prompt_document("LV", oblique, SHAPE, rois=[roi])
    assert document["labels"]["LV"]["3"]["boxes"] == [[0.0, 32.5, 8.5, 40.0]]
    parse(document, oblique)  # the server accepts it


@pytest.mark.parametrize("roi_args, match", [
    (([80, 20, 5], [5, 5, 0.5]), "lies outside the volume"),
    (([20, 20, 5], [0, 5, 3]), "no extent across the slice"),
    (([20, 20, 14], [5, 5, 0.5]), "centred outside the volume"),
])
def test_unusable_rois_are_explained(oblique, roi_args, match):
    with pytest.raises(ValueError, match=match):
        prompt_document("LV", oblique, SHAPE, rois=[volume_aligned_roi(oblique, *roi_args)])


def test_points_outside_the_volume_are_named(oblique):
    outside = ijk_to_ras([[10, 10, -0.6]], oblique)
    with pytest.raises(ValueError, match=r"exclude point 1 \(R .*\) is outside the volume: index .*k\) = "
                                         r"\(10\.0, 10\.0, -0\.6\), volume is 50 x 40 x 10 voxels"):
        prompt_document("LV", oblique, SHAPE, include_ras=ijk_to_ras([[5, 5, 1]], oblique), exclude_ras=outside)
    with pytest.raises(ValueError, match="include point 1"):
        prompt_document("LV", oblique, SHAPE, include_ras=ijk_to_ras([[50.2, 5, 1]], oblique))
    with pytest.raises(ValueError, match="no prompts for 'LV'"):
        prompt_document("LV", oblique, SHAPE)


def test_slice_choice_and_edges(oblique):
    edge = [[-0.5 - 1e-9, 39.5, 2.5], [49.5, -0.5, 9.4]]  # on the volume's outer edges; k 2.5 -> 3, 9.4 -> 9
    document = prompt_document("LV", oblique, SHAPE, include_ras=ijk_to_ras(edge, oblique))
    assert sorted(document["labels"]["LV"]) == ["3", "9"]
    assert document["labels"]["LV"]["3"]["points"][0][0] == -0.5  # round-off snapped onto the edge
    parse(document, oblique)


# ----------------------------------------------------------------------------------------- label maps
def test_label_map_to_segments_with_names_and_colours():
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[0, :2, :2] = 1
    labels[2, 3, 4] = 3  # a value the server did not describe
    infos = [{"value": 1, "name": "LV", "color": [31, 119, 180]}, {"value": 2, "name": "MYO", "color": [255, 127, 14]}]
    specs = segments_from_labelmap(labels, infos)
    assert [(s.value, s.name, s.voxels) for s in specs] == [(1, "LV", 4), (2, "MYO", 0), (3, "label_3", 1)]
    np.testing.assert_allclose(specs[0].color, (31 / 255, 119 / 255, 180 / 255))
    assert specs[2].color == (0.5, 0.5, 0.5)
    assert [s.value for s in segments_from_labelmap(labels, infos, only_values=[2])] == [2]
    assert [s.value for s in segments_from_labelmap(labels, infos, include_empty=False)] == [1, 3]
    with pytest.raises(ValueError, match="colour must be 3 integers"):
        segments_from_labelmap(labels, [{"value": 1, "name": "LV", "color": [300, 0, 0]}])


def test_segment_id_table_maps_values_to_segments():
    assert segment_id_table({1: "a", 3: "c"}) == ["a", "", "c"]
    assert segment_id_table({}) == []
    with pytest.raises(ValueError, match=">= 1"):
        segment_id_table({0: "background"})


def test_keep_values_zeroes_the_rest():
    labels = np.array([[0, 1, 2, 3]], np.uint8)
    kept = keep_values(labels, [1, 3])
    assert kept.dtype == np.uint8 and kept.tolist() == [[0, 1, 0, 3]]


def test_stack_channels_needs_one_grid(oblique):
    a, b = np.zeros(SHAPE, np.int16), np.ones(SHAPE, np.int16)
    stacked = stack_channels([a, b], [oblique, oblique], ["t1", "t2"])
    assert stacked.shape == (*SHAPE, 2) and stacked[..., 1].min() == 1
    with pytest.raises(ValueError, match=r"'t2' is \(49, 40, 10\) voxels .* resample it"):
        stack_channels([a, b[:, :, :49]], [oblique, oblique], ["t1", "t2"])
    shifted = oblique.copy()
    shifted[2, 3] += 1.0
    with pytest.raises(ValueError, match="'t2' is not on the grid of 't1' .*origin"):
        stack_channels([a, b], [oblique, shifted], ["t1", "t2"])


def test_default_oblique_fixture_is_right_handed():
    assert np.linalg.det(oblique_ijk_to_ras()[:3, :3]) > 0
