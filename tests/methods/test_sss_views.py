"""SSS views: weak warp + matrices, strong intensity views, CutMix consistency, box mapping through warps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsam_kit.engine.augment import AugmentParams, map_boxes, map_points, warp_batch
from medsam_kit.methods.sss import (
    StrongParams,
    VolumePrompt,
    apply_cutmix,
    crop_prompts,
    cutmix_boxes,
    gaussian_blur,
    step_generator,
    strong_view,
    weak_view,
)
from medsam_kit.prompts import tight_box

WARPS = AugmentParams(probability=1.0, flip=0.5, rot90=True, rotate_deg=20, scale=(0.8, 1.25), translate=0.1)


def _images(b=4, c=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, size, size, generator=g)


def test_step_generator_is_deterministic_per_seed_step_and_stream():
    draw = lambda *key: torch.rand(3, generator=step_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    assert not torch.equal(draw(0, 5, 1), draw(0, 5, 2))
    assert not torch.equal(draw(0, 5, 1), draw(0, 6, 1))
    assert not torch.equal(draw(0, 5, 1), draw(1, 5, 1))


def test_weak_view_2d_and_5d_warp_every_slice_with_the_returned_matrices():
    images = _images(b=3, c=2)
    weak, matrices = weak_view(images, WARPS, step_generator(0, 1, 0), pad_value=0.25)
    assert weak.shape == images.shape and matrices.shape == (3, 2, 3)
    expected, _ = warp_batch(images, None, matrices, 0.25)
    torch.testing.assert_close(weak, expected)
    assert not torch.allclose(weak, images)
    # 2.5D (B, C, k, S, S): the same warp for every channel and slice of a sample
    stacks = torch.rand(3, 2, 4, 32, 32)
    weak5, matrices5 = weak_view(stacks, WARPS, step_generator(0, 1, 0), pad_value=0.25)
    torch.testing.assert_close(matrices5, matrices)
    assert weak5.shape == stacks.shape
    for k in range(4):
        torch.testing.assert_close(weak5[:, :, k], warp_batch(stacks[:, :, k], None, matrices, 0.25)[0])


def test_weak_view_share_draws_what_the_whole_batch_draws():
    images = _images(b=4)
    whole, m_whole = weak_view(images, WARPS, step_generator(0, 3, 0))
    part, m_part = weak_view(images[2:], WARPS, step_generator(0, 3, 0), total=4, offset=2)
    torch.testing.assert_close(m_part, m_whole[2:])
    torch.testing.assert_close(part, whole[2:])
    with pytest.raises(ValueError, match="outside"):
        weak_view(images, WARPS, step_generator(0, 3, 0), total=4, offset=2)


def test_strong_views_keep_shape_and_range_differ_and_repeat():
    params = StrongParams(jitter=1.0, gamma=1.0, blur=1.0)
    images = _images(b=6, c=1, size=32)
    s1 = strong_view(images, params, step_generator(0, 2, 1))
    s2 = strong_view(images, params, step_generator(0, 2, 2))
    assert s1.shape == images.shape and s1.dtype == images.dtype
    assert float(s1.min()) >= 0 and float(s1.max()) <= 1
    for b in range(6):  # every sample changed, and the two views differ per sample
        assert (s1[b] - images[b]).abs().max() > 1e-3
        assert (s1[b] - s2[b]).abs().max() > 1e-3
    torch.testing.assert_close(s1, strong_view(images, params, step_generator(0, 2, 1)), rtol=0, atol=0)
    # 2.5D stacks: same shape, per-sample parameters shared by the slices
    stacks = torch.rand(2, 1, 3, 32, 32)
    out = strong_view(stacks, StrongParams(jitter=1.0, gamma=0.0, blur=0.0), step_generator(0, 0, 1))
    assert out.shape == stacks.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # all off: the identity
    off = StrongParams(jitter=0.0, gamma=0.0, blur=0.0, grayscale=0.0)
    torch.testing.assert_close(strong_view(images, off, step_generator(0, 0, 1)), images)


def test_grayscale_replaces_channels_by_their_mean():
    images = _images(b=3, c=3)
    out = strong_view(images, StrongParams(jitter=0.0, gamma=0.0, blur=0.0, grayscale=1.0), step_generator(0, 0, 1))
    torch.testing.assert_close(out, images.mean(dim=1, keepdim=True).expand_as(images))
    single = _images(b=3, c=1)  # one channel: nothing to average
    torch.testing.assert_close(strong_view(single, StrongParams(jitter=0, gamma=0, blur=0, grayscale=1.0),
                                           step_generator(0, 0, 1)), single)


def test_gaussian_blur_per_sample_sigma():
    images = _images(b=2, c=1, size=32)
    out = gaussian_blur(images, torch.tensor([0.0, 1.5]))
    torch.testing.assert_close(out[0], images[0])  # sigma 0: unchanged
    assert out[1].std() < 0.6 * images[1].std()  # white noise loses most of its variance
    assert abs(float(out[1].mean() - images[1].mean())) < 0.01  # reflect padding keeps the mean
    constant = torch.full((1, 2, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([2.0])), constant)


def test_cutmix_moves_images_pseudo_labels_and_confidence_together():
    b, size = 8, 32
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (b, size, size), generator=g)
    confidence = torch.arange(b, dtype=torch.float32)[:, None, None].expand(b, size, size) / 10
    images = (labels.float() * 10 + torch.arange(b)[:, None, None])[:, None] / 100  # (B, 1, S, S): label and id
    region, partner = cutmix_boxes(b, (size, size), StrongParams(cutmix=1.0), step_generator(0, 0, 3))
    assert region.shape == (b, size, size) and region.dtype == torch.bool
    assert (partner != torch.arange(b)).all() and sorted(partner.tolist()) == list(range(b))
    areas = region.float().mean(dim=(1, 2))
    assert (areas > 0).all() and (areas <= 0.45).all()
    for i in range(b):  # the region is one box
        rows, cols = torch.nonzero(region[i], as_tuple=True)
        box = region[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert bool(box.all())
    mixed_image = apply_cutmix(images, region, partner)
    mixed_labels = apply_cutmix(labels, region, partner)
    mixed_conf = apply_cutmix(confidence, region, partner)
    # every pixel of the mixed image still encodes (its label, its source sample) consistently
    source = torch.round(mixed_conf * 10)
    torch.testing.assert_close(mixed_image[:, 0], (mixed_labels.float() * 10 + source) / 100)
    assert torch.equal(source[region], partner[:, None, None].expand(b, size, size)[region].float())
    assert torch.equal(mixed_labels[~region], labels[~region])
    # probability 0: nothing pasted
    none, _ = cutmix_boxes(b, (size, size), StrongParams(cutmix=0.0), step_generator(0, 0, 3))
    assert not none.any()


def _rect_label(b, size, box):
    x0, y0, x1, y1 = box
    label = torch.zeros(b, size, size, dtype=torch.int64)
    label[:, y0:y1, x0:x1] = 1
    return label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mapped_box_lands_on_the_warped_object(seed):
    size, box = 64, (12, 20, 40, 31)
    label = _rect_label(6, size, box)
    _, matrices = weak_view(label[:, None].float(), WARPS, step_generator(seed, 0, 0))
    _, warped = warp_batch(label[:, None].float(), label, matrices)
    mapped = map_boxes(torch.tensor([box] * 6, dtype=torch.float64), matrices, (size, size)).clamp(0, size)
    for i in range(6):  # (clipped: a warp may push part of the object out of the image)
        truth = tight_box(warped[i].numpy() == 1)
        angle = math.atan2(float(matrices[i, 1, 0]), float(matrices[i, 0, 0]))
        # enclosing box of a rotated rectangle vs the nearest-resampled object: ~1 px, more at odd angles
        tol = 1.5 if abs(math.sin(2 * angle)) < 1e-6 else 2.5
        assert np.allclose(mapped[i].numpy(), truth.as_array(), atol=tol), (i, mapped[i], truth)


def test_map_boxes_and_points_exact_for_quarter_turns_and_flips():
    size = 32
    flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # left-right flip
    turn = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # a quarter turn
    box = torch.tensor([[4.0, 6.0, 10.0, 20.0]])
    assert map_boxes(box, flip, (size, size)).tolist() == [[22.0, 6.0, 28.0, 20.0]]
    assert map_points(torch.tensor([[[4.0, 6.0]]]), flip, (size, size)).tolist() == [[[27.0, 6.0]]]
    label = _rect_label(1, size, (4, 6, 10, 20))
    _, warped = warp_batch(label[:, None].float(), label, turn)
    assert tight_box(warped[0].numpy() == 1).as_tuple() == tuple(map_boxes(box, turn, (size, size))[0].tolist())


def test_crop_prompts_shift_map_filter_and_use_points_on_the_key_slice():
    size = 32
    prompt = VolumePrompt(cls=2, box=(14, 12, 24, 20), point=(18, 15), start=3, stop=7, key_slice=5)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(4, 1, 1)
    origins = torch.tensor([[5, 2, 4], [3, 2, 4], [7, 2, 4], [5, 10, 18]])  # key slice, window, outside, cut off
    index, classes, boxes, points, point_labels = crop_prompts([[prompt]] * 4, origins, identity, size)
    assert index.tolist() == [0, 1, 3] and classes.tolist() == [2, 2, 2]  # sample 2: slice 7 is past the window
    # box shifted by the crop origin (x - 4, y - 2), in the decoder's inclusive corner pixels
    assert boxes[:2].tolist() == [[10.0, 10.0, 19.0, 17.0]] * 2
    assert points[0, 0].tolist() == [14.0, 13.0] and point_labels[:, 0].tolist() == [1, -1, 1]  # key slice only
    # the fourth crop (x - 18, y - 10) holds 6 of the box's 10 columns: clipped, kept at min_inside 0.5 ...
    assert boxes[2].tolist() == [0.0, 2.0, 5.0, 9.0]
    # ... dropped at 0.7
    assert crop_prompts([[prompt]] * 4, origins, identity, size, min_inside=0.7)[0].tolist() == [0, 1]
    assert crop_prompts([[prompt]], origins[2:3], identity[:1], size) is None
    # through a flip, the box and point land where the object went
    flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    _, _, fboxes, fpoints, _ = crop_prompts([[prompt]], origins[:1], flip, size)
    assert fboxes.tolist() == [[12.0, 10.0, 21.0, 17.0]] and fpoints[0, 0].tolist() == [17.0, 13.0]


def test_crop_prompts_per_slice_use_each_slice_box_and_point():
    size = 32
    slices = ((4, (14.0, 12.0, 24.0, 20.0), (18.0, 15.0)), (5, (16.0, 12.0, 22.0, 18.0), (19.0, 14.0)))
    prompt = VolumePrompt(cls=1, box=(14, 12, 24, 20), point=(18, 15), start=3, stop=7, key_slice=4, slices=slices)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(3, 1, 1)
    origins = torch.tensor([[5, 2, 4], [4, 2, 4], [6, 2, 4]])  # slice 6: in the window, not on the object
    index, _, boxes, points, point_labels = crop_prompts([[prompt]] * 3, origins, identity, size, per_slice=True)
    assert index.tolist() == [0, 1]
    assert boxes[0].tolist() == [12.0, 10.0, 17.0, 15.0]  # slice 5's own box, shifted, inclusive corners
    assert points[0, 0].tolist() == [15.0, 12.0] and point_labels[:, 0].tolist() == [1, 1]  # a point on every slice
    key = crop_prompts([[prompt]] * 3, origins, identity, size, per_slice=False)  # the key-slice reading
    assert key[0].tolist() == [0, 1, 2] and key[2][0].tolist() == [10.0, 10.0, 19.0, 17.0]
