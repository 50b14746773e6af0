"""Slice ↔ model-input coordinates: boxes and points on non-square slices map exactly and round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_kit.infer import EmbeddingCache, ResizeTransform, SlicePredictor
from medsam_kit.prompts import BoxPrompt


def test_box_on_non_square_slice_maps_to_the_right_model_box():
    tf = ResizeTransform((60, 120), 128)  # Y=60, X=120: longest side 120 -> 128, scale 16/15
    assert tf.resized_yx == (64, 128)
    assert tf.scale_xy == pytest.approx((128 / 120, 64 / 60))
    corners = tf.box_to_model(BoxPrompt(30, 15, 90, 45))
    # edges scale by 16/15: x 30->32, 90->96, y 15->16, 45->48; inclusive corners are edge - 1 on the far side
    np.testing.assert_allclose(corners, [32, 16, 95, 47])
    # scale 1 (a 128x128 slice): the same as BoxPrompt.to_inclusive_pixels
    same = ResizeTransform((128, 128), 128)
    box = BoxPrompt(3, 7, 50, 90)
    np.testing.assert_allclose(same.box_to_model(box), box.to_inclusive_pixels())


@pytest.mark.parametrize("shape_yx", [(60, 120), (97, 31), (200, 150), (128, 128)])
def test_box_and_point_round_trip(shape_yx):
    tf = ResizeTransform(shape_yx, 128)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x0, x1 = np.sort(rng.uniform(0, shape_yx[1], 2))
        y0, y1 = np.sort(rng.uniform(0, shape_yx[0], 2))
        box = BoxPrompt(x0, y0, x1 + 1e-3, y1 + 1e-3)
        np.testing.assert_allclose(tf.box_from_model(tf.box_to_model(box)).as_tuple(), box.as_tuple(), atol=1e-9)
    points = rng.uniform(-0.5, min(shape_yx) - 0.5, (10, 2))
    np.testing.assert_allclose(tf.points_from_model(tf.points_to_model(points)), points, atol=1e-9)
    # the slice's corner pixel centres land on the resized area's corner pixel centres' span
    h, w = tf.resized_yx
    far = tf.points_to_model(np.array([[-0.5, -0.5], [shape_yx[1] - 0.5, shape_yx[0] - 0.5]]))
    np.testing.assert_allclose(far, [[-0.5, -0.5], [w - 0.5, h - 0.5]])


def test_image_and_mask_transform_keep_the_object_in_place():
    tf = ResizeTransform((60, 120), 128)
    image = np.zeros((1, 1, 60, 120), np.float32)
    image[..., 15:45, 30:90] = 1.0
    model_input = tf.image_to_model(torch.from_numpy(image))
    assert model_input.shape == (1, 1, 128, 128)
    assert model_input[..., 64:, :].abs().max() == 0  # padding below the resized slice
    inside = model_input[0, 0] > 0.5
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    assert (cols[0], cols[-1], rows[0], rows[-1]) == (32, 95, 16, 47)  # = the mapped inclusive box
    back = tf.mask_to_slice(torch.where(inside, 10.0, -10.0)) > 0
    np.testing.assert_array_equal(back.numpy(), image[0, 0] > 0.5)


def test_stub_decoder_returns_the_prompted_box_on_the_slice_grid(stub_model):
    model = stub_model(image_size=64)
    predictor = SlicePredictor(model, EmbeddingCache(), batch_size=4)
    volume = np.ones((1, 3, 45, 90), np.float32)  # (C, Z, Y, X), non-square slices
    features = predictor.features("v", volume, [1])
    logits, low = predictor.decode(features, (45, 90), BoxPrompt(10, 5, 50, 30))
    assert logits.shape == (45, 90) and low.shape == (1, 1, 16, 16)
    mask = logits > 0
    # the box maps to fractional model pixels (scale 64/90), so its border may move by one slice pixel
    np.testing.assert_array_equal(mask[6:29, 11:49], True)
    outside = np.ones((45, 90), bool)
    outside[4:31, 9:51] = False
    assert not mask[outside].any()
    np.testing.assert_allclose(model.decoded_boxes[-1], [10 * 64 / 90, 5 * 32 / 45, 50 * 64 / 90 - 1, 30 * 32 / 45 - 1],
                               rtol=1e-6)


def test_padding_uses_the_pad_value():
    tf = ResizeTransform((32, 64), 64, pad_value=0.5)
    out = tf.image_to_model(torch.ones(1, 1, 32, 64))
    assert float(out[..., :32, :].min()) == 1.0
    assert float(out[..., 32:, :].max()) == 0.5 == float(out[..., 32:, :].min())
