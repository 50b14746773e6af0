"""PCSW on constructed coarse masks: blobs accepted at their widest slice, noise rejected, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsam_kit.prompts import PromptSet, pcsw_class_prompt, pcsw_prompt_set, pcsw_prompts, pcsw_window_lengths
from medsam_kit.prompts.pcsw import _SliceGraph, _window_result


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + \
        ((xx - centre[2]) / radii[2]) ** 2 <= 1


def _noise(shape, density, seed) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < density


def test_window_lengths_run_from_a_third_to_a_half():
    assert pcsw_window_lengths(30) == list(range(10, 16))
    assert pcsw_window_lengths(40) == list(range(14, 21))
    assert pcsw_window_lengths(5) == [2] and pcsw_window_lengths(1) == [1] and pcsw_window_lengths(2) == [1]
    with pytest.raises(ValueError, match="at least one slice"):
        pcsw_window_lengths(0)


def test_continuous_blob_is_accepted_at_its_widest_slice():
    shape = (40, 64, 64)
    blob = _ellipsoid(shape, (20, 30, 25), (8, 10, 12))  # slices 12..28, widest at 20
    result = pcsw_prompts(blob.astype(np.uint8))[1]
    assert result.fallback is False and result.continuity == 1.0
    areas = blob.sum(axis=(1, 2))
    assert result.slice_index == int(np.argmax(areas)) == 20
    rows, cols = np.nonzero(blob[20])
    assert result.box.as_tuple() == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert result.point == (25.0, 30.0)  # the deepest pixel of the ellipse section
    # The blob spans 17 slices (12..28); of the shortest windows (14 slices), the centred one holds most of it.
    assert result.window == (13, 27)


def test_blob_with_a_little_noise_is_still_accepted():
    shape = (30, 48, 48)
    blob = _ellipsoid(shape, (15, 24, 24), (7, 10, 10))
    noisy = blob | (_noise(shape, 0.0005, 1) & ~ndimage.binary_dilation(blob, iterations=2))
    result = pcsw_prompts(noisy)[1]  # bool input = class 1
    assert result.fallback is False and 0.8 <= result.continuity < 1.0
    assert result.slice_index == 15


def test_scattered_noise_is_rejected():
    noise = _noise((30, 48, 48), 0.02, 2)
    result = pcsw_prompts(noise.astype(np.uint8), min_voxels=10)[1]
    assert result.fallback is True  # (None would also be a rejection; 2% noise has enough voxels for a fallback)
    assert result.window is None and result.continuity < 0.8
    # fallback = the largest single 2D component
    sizes = [np.bincount(ndimage.label(s, structure=np.ones((3, 3)))[0].ravel())[1:].max(initial=0) for s in noise]
    assert result.slice_index == int(np.argmax(sizes))
    assert result.box.width * result.box.height >= max(sizes)


def test_two_far_apart_blobs_fail_the_continuity_rule():
    """Equal blobs in one window: continuity 0.5; windows too short to hold both each see one blob."""
    shape = (12, 32, 32)
    a = _ellipsoid(shape, (2, 10, 10), (1.5, 4, 4))
    b = _ellipsoid(shape, (6, 22, 22), (1.5, 4, 4))
    mask = a | b
    result = pcsw_class_prompt(mask, window_lengths=[12])
    assert result.fallback is True and result.continuity == pytest.approx(0.5)
    accepted = pcsw_class_prompt(mask, window_lengths=[4])
    assert accepted.fallback is False and accepted.continuity == 1.0


def test_empty_volume_and_tiny_classes_give_none():
    assert pcsw_prompts(np.zeros((6, 8, 8), np.uint8)) == {}
    assert pcsw_prompts(np.zeros((6, 8, 8), np.uint8), classes=[1, 2]) == {1: None, 2: None}
    tiny = np.zeros((6, 8, 8), np.uint8)
    tiny[2, 3, 3:6] = 1  # 3 voxels < min_voxels
    assert pcsw_prompts(tiny)[1] is None
    assert pcsw_prompts(tiny, min_voxels=1)[1].fallback is False


def test_classes_are_independent_and_results_deterministic():
    shape = (24, 40, 40)
    labels = np.zeros(shape, np.uint8)
    labels[_ellipsoid(shape, (10, 12, 12), (5, 6, 6))] = 1
    labels[_ellipsoid(shape, (14, 28, 27), (6, 7, 8))] = 2
    labels[_noise(shape, 0.01, 3) & (labels == 0)] = 3
    both = pcsw_prompts(labels)
    assert sorted(both) == [1, 2, 3] and not both[1].fallback and not both[2].fallback
    only_one = np.where(labels == 1, 1, 0).astype(np.uint8)
    assert pcsw_prompts(only_one)[1] == both[1]
    assert pcsw_prompts(labels) == both
    assert both[1].slice_index == 10 and both[2].slice_index == 14
    ps = pcsw_prompt_set(both, include_fallbacks=False)
    assert isinstance(ps, PromptSet) and ps.labels() == [1, 2] and ps.slices(2) == [14]
    assert ps.get(1, 10).point_labels.tolist() == [1] and ps.get(1, 10).boxes[0] == both[1].box


def test_first_window_rule_of_the_paper_is_available():
    shape = (40, 64, 64)
    blob = _ellipsoid(shape, (20, 30, 25), (8, 10, 12))
    first = pcsw_prompts(blob, pick="first")[1]
    assert first.window == (0, 14) and first.slice_index == 13  # the tip of the blob inside [0, 14)
    assert pcsw_prompts(blob, pick="largest")[1].slice_index == 20


def test_key_point_of_a_ring_lies_on_the_ring():
    shape = (20, 48, 48)
    zz, yy, xx = np.ogrid[:20, :48, :48]
    r = np.hypot(yy - 24, xx - 24)
    ring = (r >= 8) & (r <= 13) & (np.abs(zz - 10) <= 4) & np.ones(shape, bool)
    result = pcsw_prompts(ring)[1]
    x, y = result.point
    assert ring[result.slice_index, int(y), int(x)] and not result.fallback


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_slice_graph_components_equal_3d_labelling(connectivity):
    """The window shortcut must give exactly scipy's 3D components on every window."""
    mask = _noise((12, 20, 20), 0.25, connectivity)
    graph = _SliceGraph(mask, connectivity)
    structure = ndimage.generate_binary_structure(3, connectivity)
    for start, stop in [(0, 12), (3, 7), (5, 6), (0, 4), (8, 12)]:
        lab, _ = ndimage.label(mask[start:stop], structure=structure)
        sizes = np.bincount(lab.ravel())[1:]
        continuity, largest, _ = _window_result(graph, start, stop)
        assert largest == sizes.max() and continuity == pytest.approx(sizes.max() / sizes.sum())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="threshold or argmax"):
        pcsw_prompts(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"3D \(Z, Y, X\)"):
        pcsw_prompts(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="background"):
        pcsw_prompts(np.zeros((4, 4, 4), np.uint8), classes=[0])
    with pytest.raises(ValueError, match=r"window lengths must be 1..4 slices"):
        pcsw_prompts(np.ones((4, 4, 4), np.uint8), window_lengths=[5])
    with pytest.raises(ValueError, match="connectivity"):
        pcsw_prompts(np.ones((4, 4, 4), np.uint8), connectivity=4)
