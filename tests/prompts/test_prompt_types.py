"""Prompt types: box convention, validation messages, PromptSet behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_kit.prompts import BoxPrompt, PointPrompts, PromptSet, SlicePrompts


def test_integer_box_selects_exactly_its_pixels():
    image = np.arange(10 * 12).reshape(10, 12)
    box = BoxPrompt(3, 2, 7, 5)  # columns 3..6, rows 2..4
    assert box.width == 4 and box.height == 3
    rows, cols = np.nonzero(np.isin(image, image[int(box.y0):int(box.y1), int(box.x0):int(box.x1)]))
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (3, 2, 7, 5)
    assert box.to_inclusive_pixels() == (3, 2, 6, 4)
    assert BoxPrompt.from_inclusive_pixels(3, 2, 6, 4) == box
    assert box.center == (4.5, 3.0)  # pixel-index coordinates: centre of columns 3..6, rows 2..4
    assert BoxPrompt(5, 5, 6, 6).center == (5.0, 5.0)  # one-pixel box: the pixel itself


@pytest.mark.parametrize("coords, fragment", [
    ((5, 1, 5, 4), "empty or reversed"),
    ((6, 1, 2, 4), "x0 < x1"),
    ((0, 4, 3, 1), "y0 < y1"),
    ((0, float("nan"), 3, 4), "finite"),
])
def test_malformed_boxes_are_refused(coords, fragment):
    with pytest.raises(ValueError, match=fragment):
        BoxPrompt(*coords)


def test_box_inside_check_names_the_slice_size():
    BoxPrompt(0, 0, 12, 10).check_inside((10, 12))  # the whole slice is valid
    with pytest.raises(ValueError, match=r"outside the 10x12 \(Y x X\) slice.*x1 <= 12"):
        BoxPrompt(0, 0, 13, 10).check_inside((10, 12))
    with pytest.raises(ValueError, match="outside"):
        BoxPrompt(-1, 0, 5, 5).check_inside((10, 12))


def test_scale_and_clip():
    box = BoxPrompt(10, 20, 20, 40).scaled(1.5)
    assert box.as_tuple() == (7.5, 15.0, 22.5, 45.0)
    assert box.clipped((42, 21)).as_tuple() == (7.5, 15.0, 21.0, 42.0)
    with pytest.raises(ValueError, match="does not overlap"):
        BoxPrompt(30, 30, 40, 40).clipped((10, 10))


def test_points_shape_labels_and_inside_rule():
    pts = PointPrompts(np.array([[1, 2], [3.5, 4]]), np.array([1, 0]))
    assert pts.coords.dtype == np.float64 and pts.labels.tolist() == [1, 0]
    assert PointPrompts(np.array([[1, 2]])).labels.tolist() == [1]  # default positive
    with pytest.raises(ValueError, match="one label per point"):
        PointPrompts(np.array([[1, 2]]), np.array([1, 0]))
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        PointPrompts(np.array([[1, 2]]), np.array([2]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        PointPrompts(np.array([1, 2, 3]))
    # A point lies on the slice when it is within the area covered by the pixels.
    PointPrompts(np.array([[-0.5, -0.5], [11.5, 9.5]])).check_inside((10, 12))
    with pytest.raises(ValueError, match=r"point 1 \(x=12, y=0\) is outside"):
        PointPrompts(np.array([[0, 0], [12, 0]])).check_inside((10, 12))
    both = PointPrompts.concat(PointPrompts(np.array([[1, 1]])), PointPrompts(np.array([[2, 2]]), np.array([0])))
    assert both.coords.tolist() == [[1, 1], [2, 2]] and both.labels.tolist() == [1, 0]


def test_slice_prompts_and_prompt_set():
    a = SlicePrompts(boxes=(BoxPrompt(1, 1, 4, 4),), points=PointPrompts(np.array([[2, 2]])))
    b = SlicePrompts(points=PointPrompts(np.array([[5, 5]]), np.array([0])))
    assert a.boxes_array().tolist() == [[1, 1, 4, 4]] and b.boxes_array().shape == (0, 4)
    ps = PromptSet({3: {7: a}, 1: {2: b, 0: a}})
    assert ps.labels() == [1, 3] and ps.slices(1) == [0, 2] and len(ps) == 3
    assert [(lab, k) for lab, k, _ in ps] == [(1, 0), (1, 2), (3, 7)]
    assert ps.for_slice(0) == {1: a} and ps.get(3, 7) == a and ps.get(3, 8) is None
    assert ps == PromptSet({1: {0: a, 2: b}, 3: {7: a}})
    assert ps != PromptSet({1: {0: a, 2: a}, 3: {7: a}})
    ps.check_inside((8, 6, 6))
    with pytest.raises(ValueError, match=r"label 3: slice 7 is outside the volume \(Z=5"):
        ps.check_inside((5, 6, 6))
    with pytest.raises(ValueError, match="label 1, slice 2: point 0 \\(x=5, y=5\\) is outside"):
        ps.check_inside((8, 5, 5))
    with pytest.raises(ValueError, match="background"):
        ps.add(0, 1, a)
    with pytest.raises(ValueError, match="no box, point or mask"):
        ps.add(1, 1, SlicePrompts())
    with pytest.raises(ValueError, match="non-negative integer"):
        ps.add(1, -1, a)


def test_mask_prompt_must_be_2d():
    assert SlicePrompts(mask=np.ones((4, 4), bool)).mask.dtype == np.float32
    with pytest.raises(ValueError, match=r"2D \(h, w\)"):
        SlicePrompts(mask=np.ones((1, 4, 4)))
