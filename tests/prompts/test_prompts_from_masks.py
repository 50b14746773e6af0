"""Ground-truth prompts: exact boxes, bounded seeded jitter, points inside/outside, batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsam_kit.prompts import (
    GBT_SAM_BOX_ENLARGE,
    BoxPrompt,
    MaskPromptConfig,
    batch_prompts_from_labels,
    box_from_mask,
    center_point,
    mask_prompt,
    negative_points,
    perturb_box,
    positive_points,
    prompt_set_from_labels,
    slice_prompts_from_labels,
    slice_prompts_from_mask,
    tight_box,
)


def _blob(shape=(64, 80), rows=(10, 30), cols=(20, 51)) -> np.ndarray:
    """Ellipse filling rows[0]..rows[1]-1, cols[0]..cols[1]-1 exactly (its tight box is known)."""
    r, c = np.mgrid[:shape[0], :shape[1]]
    cr, cc = (rows[0] + rows[1] - 1) / 2, (cols[0] + cols[1] - 1) / 2
    hr, hc = (rows[1] - rows[0]) / 2, (cols[1] - cols[0]) / 2
    return ((r - cr) / hr) ** 2 + ((c - cc) / hc) ** 2 <= 1


def _ring(shape=(64, 64), centre=(32, 30), inner=8, outer=14) -> np.ndarray:
    r, c = np.mgrid[:shape[0], :shape[1]]
    d = np.hypot(r - centre[0], c - centre[1])
    return (d >= inner) & (d <= outer)


def test_tight_box_equals_mask_extent():
    mask = _blob()
    rows, cols = np.nonzero(mask)
    box = tight_box(mask)
    assert box.as_tuple() == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (20, 10, 51, 30)
    assert mask[int(box.y0):int(box.y1), int(box.x0):int(box.x1)].sum() == mask.sum()
    single = np.zeros((5, 5), bool)
    single[4, 0] = True
    assert tight_box(single).as_tuple() == (0, 4, 1, 5)
    assert box_from_mask(mask).as_tuple() == box.as_tuple()  # no jitter = tight


def test_empty_mask_gives_no_prompt():
    empty = np.zeros((8, 8), bool)
    assert tight_box(empty) is None and box_from_mask(empty, jitter_px=3, rng=0) is None
    assert positive_points(empty, 3) is None and center_point(empty) is None
    assert slice_prompts_from_mask(empty) is None
    assert negative_points(empty, 2, rng=0).shape == (2, 2)  # any pixel is background


def test_pixel_jitter_is_bounded_and_seeded():
    mask = _blob()
    tight = tight_box(mask).as_array()
    boxes = np.array([box_from_mask(mask, jitter_px=5, rng=seed).as_array() for seed in range(300)])
    assert np.all(np.abs(boxes - tight) <= 5 + 1e-9)
    assert np.abs(boxes - tight).max() > 4.5  # the bound is actually used
    assert np.all(boxes[:, 2] - boxes[:, 0] >= 1) and np.all(boxes[:, 3] - boxes[:, 1] >= 1)
    again = box_from_mask(mask, jitter_px=5, rng=7)
    assert again == box_from_mask(mask, jitter_px=5, rng=7) != box_from_mask(mask, jitter_px=5, rng=8)
    gen_a, gen_b = np.random.default_rng(3), np.random.default_rng(3)
    assert box_from_mask(mask, jitter_px=5, rng=gen_a) == box_from_mask(mask, jitter_px=5, rng=gen_b)


def test_fractional_jitter_scales_with_box_side():
    mask = _blob()  # width 31, height 20
    boxes = np.array([box_from_mask(mask, jitter_frac=0.1, rng=s).as_array() for s in range(300)])
    dev = np.abs(boxes - tight_box(mask).as_array())
    assert dev[:, [0, 2]].max() <= 3.1 + 1e-9 and dev[:, [0, 2]].max() > 2.8
    assert dev[:, [1, 3]].max() <= 2.0 + 1e-9 and dev[:, [1, 3]].max() > 1.8


def test_jitter_is_clipped_to_the_image():
    mask = np.zeros((20, 30), bool)
    mask[0:5, 25:30] = True  # touches the top and right edges
    for seed in range(100):
        box = box_from_mask(mask, jitter_px=6, rng=seed)
        box.check_inside(mask.shape)
        assert box.y0 >= 0 and box.x1 <= 30


def test_enlargement_keeps_the_centre():
    mask = _blob()
    box = box_from_mask(mask, enlarge=GBT_SAM_BOX_ENLARGE)
    assert box.width == pytest.approx(31 * 1.33) and box.height == pytest.approx(20 * 1.33)
    assert box.center == pytest.approx(tight_box(mask).center)
    edge = np.zeros((20, 20), bool)
    edge[0:10, 0:10] = True
    assert box_from_mask(edge, enlarge=2.0).as_tuple() == (0, 0, 15, 15)  # clipped at 0


def test_integer_boxes_round_outwards():
    box = perturb_box(BoxPrompt(2.2, 3.7, 8.1, 9.9), (20, 20), integer=True)
    assert box.as_tuple() == (2, 3, 9, 10)


def test_positive_points_lie_inside_and_interior_points_away_from_edges():
    mask = _blob()
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    pts = positive_points(mask, 50, mode="random", rng=0)
    assert pts.shape == (50, 2) and mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    inner = positive_points(mask, 50, mode="interior", rng=0)
    assert np.all(dist[inner[:, 1].astype(int), inner[:, 0].astype(int)] >= 0.5 * dist.max())
    assert np.array_equal(inner, positive_points(mask, 50, mode="interior", rng=0))
    assert center_point(mask) == (35.0, 19.0)  # centre of cols 20..50, rows 10..29, the deepest pixel
    assert positive_points(mask, 1, mode="center").tolist() == [[35.0, 19.0]]


def test_center_point_of_a_ring_is_on_the_ring():
    ring = _ring()
    x, y = center_point(ring)
    assert ring[int(y), int(x)]
    # the box centre (what a naive rule would use) is in the hole
    cx, cy = tight_box(ring).center
    assert not ring[round(cy), round(cx)]


def test_negative_points_are_background_near_the_box():
    mask = _blob()
    pts = negative_points(mask, 40, margin=0.25, rng=1)
    x, y = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert pts.shape == (40, 2) and not mask[y, x].any()
    # inside the box grown by a quarter of its size per side: cols 20-7.75.., rows 10-5..
    assert x.min() >= 12 and x.max() <= 58 and y.min() >= 5 and y.max() <= 34
    anywhere = negative_points(mask, 200, region="anywhere", rng=1)
    assert not mask[anywhere[:, 1].astype(int), anywhere[:, 0].astype(int)].any()
    assert anywhere[:, 1].max() > 40  # reaches far from the object
    assert negative_points(np.ones((5, 5), bool), 3, rng=0).shape == (0, 2)  # no background at all


def test_mask_prompt_resizes_and_gives_logits():
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    low = mask_prompt(mask, (16, 16))
    assert low.shape == (16, 16) and low.dtype == np.float32
    assert np.all(low[:, :7] == 1.0) and np.all(low[:, 9:] == 0.0)
    logits = mask_prompt(mask, (16, 16), logit=10.0)
    assert logits[0, 0] == 10.0 and logits[0, 15] == -10.0


def test_slice_prompts_per_class_for_a_label_slice():
    labels = np.zeros((40, 40), np.uint8)
    labels[5:10, 5:15] = 1
    labels[20:30, 22:35] = 3
    cfg = MaskPromptConfig(n_positive=2, n_negative=1, mask_size=(10, 10))
    out = slice_prompts_from_labels(labels, classes=[1, 2, 3], config=cfg, rng=0)
    assert out[2] is None
    assert out[1].boxes[0].as_tuple() == (5, 5, 15, 10) and out[3].boxes[0].as_tuple() == (22, 20, 35, 30)
    assert out[3].point_labels.tolist() == [1, 1, 0] and out[3].mask.shape == (10, 10)
    pos = out[3].point_coords[:2].astype(int)
    assert (labels[pos[:, 1], pos[:, 0]] == 3).all()
    neg = out[3].point_coords[2].astype(int)
    assert labels[neg[1], neg[0]] != 3
    assert sorted(slice_prompts_from_labels(labels)) == [1, 3]  # default: classes present


def test_prompt_set_from_a_label_volume_uses_the_largest_slice():
    vol = np.zeros((6, 20, 20), np.uint8)
    vol[1, 2:5, 2:5] = 1
    vol[3, 2:10, 2:12] = 1  # largest slice of class 1
    vol[4, 10:15, 10:15] = 2
    ps = prompt_set_from_labels(vol, rng=0)
    assert ps.labels() == [1, 2] and ps.slices(1) == [3] and ps.slices(2) == [4]
    assert ps.get(1, 3).boxes[0].as_tuple() == (2, 2, 12, 10)
    assert prompt_set_from_labels(vol, slices="all", rng=0).slices(1) == [1, 3]
    assert prompt_set_from_labels(vol, slices=[1, 4], rng=0).slices(1) == [1]


def test_batched_prompts_have_fixed_shapes_and_padding():
    labels = np.zeros((3, 32, 32), np.uint8)
    labels[0, 4:10, 4:12] = 1
    labels[0, 20:28, 20:30] = 2
    labels[2, 1:3, 1:3] = 2
    cfg = MaskPromptConfig(n_positive=2, n_negative=1, mask_size=(8, 8), jitter_px=2)
    batch = batch_prompts_from_labels(labels, [1, 2], cfg, rng=5)
    assert batch.boxes.shape == (3, 2, 4) and batch.point_coords.shape == (3, 2, 3, 2)
    assert batch.point_labels.shape == (3, 2, 3) and batch.masks.shape == (3, 2, 8, 8)
    assert batch.valid.tolist() == [[True, True], [False, False], [False, True]]
    assert batch.point_labels[0, 0].tolist() == [1, 1, 0] and (batch.point_labels[1] == -1).all()
    assert np.all(np.abs(batch.boxes[0, 0] - [4, 4, 12, 10]) <= 2)
    again = batch_prompts_from_labels(labels, [1, 2], cfg, rng=5)
    assert np.array_equal(again.boxes, batch.boxes) and np.array_equal(again.point_coords, batch.point_coords)
    with pytest.raises(ValueError, match="background"):
        batch_prompts_from_labels(labels, [0, 1])


def test_interior_fraction_zero_still_samples_only_the_mask():
    mask = _blob()
    pts = positive_points(mask, 200, mode="interior", interior_fraction=0.0, rng=0)
    assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
