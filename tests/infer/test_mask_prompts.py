"""Mask prompts: logits rule, placement in model space ("longest" and "native"), window choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsam_kit.infer import EmbeddingCache, ResizeTransform, SlicePredictor
from medsam_kit.infer.slice_predictor import MASK_LOGIT, mask_logits
from medsam_kit.prompts import BoxPrompt


def _square(shape_yx, rows, cols) -> np.ndarray:
    out = np.zeros(shape_yx, np.float32)
    out[rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return out


def _downsample(full: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def test_mask_logits_rule():
    binary = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(mask_logits(binary).numpy(), [[-MASK_LOGIT, MASK_LOGIT], [MASK_LOGIT, -MASK_LOGIT]])
    probability = torch.sigmoid(torch.tensor([[2.0, -3.0], [0.0, 30.0]]))
    np.testing.assert_allclose(mask_logits(probability).numpy(), [[2.0, -3.0], [0.0, MASK_LOGIT]], atol=1e-5)
    logits = np.array([[-7.5, 0.25], [12.0, 0.5]], np.float32)  # a value outside [0, 1]: already logits
    np.testing.assert_array_equal(mask_logits(logits).numpy(), logits)
    assert mask_logits(torch.zeros(1, 1, 3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match="2D"):
        mask_logits(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="finite"):
        mask_logits(np.array([[np.nan, 1.0]]))


def test_native_mask_prompt_lines_up_with_the_image_in_its_window(stub_model):
    predictor = SlicePredictor(stub_model(image_size=128), mode="native")
    shape = (200, 160)  # larger than S = 128 on both axes: windows at y 0/64/72, x 0/32
    square = _square(shape, (148, 180), (100, 140))
    window = predictor.window_for(shape, None, None, mask=square)
    assert window == (72, 32)  # the only windows holding the whole mask (the first grid window (0, 0) misses it)
    assert predictor.mask_box(square, shape) == BoxPrompt(100, 148, 140, 180)
    placed = predictor.mask_to_model(square, shape, window)
    assert placed.shape == (1, 1, 32, 32)
    # The image with the same bright square, through the encoder's path into the same window, at S/4:
    image = predictor.model_input(square[None, None], window)
    expected = 2 * MASK_LOGIT * _downsample(image, 32) - MASK_LOGIT  # binary 0/1 -> -10/+10, linear in between
    np.testing.assert_allclose(placed.numpy(), expected.numpy(), atol=1e-4)
    rows, cols = np.nonzero(placed[0, 0].numpy() > 0)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == ((148 - 72) // 4, (180 - 72) // 4,
                                                                        (100 - 32) // 4, (140 - 32) // 4)
    # A quarter-resolution prompt (as SAM's 256-px masks are) lands on the same model pixels.
    quarter = _square((50, 40), (148 // 4, 180 // 4), (100 // 4, 140 // 4))
    assert predictor.window_for(shape, None, None, mask=quarter) == window
    low = predictor.mask_to_model(quarter, shape, window)
    np.testing.assert_array_equal(low[0, 0].numpy() > 0, placed[0, 0].numpy() > 0)


def test_native_mask_prompt_on_a_small_slice_is_centred_and_zero_padded(stub_model):
    predictor = SlicePredictor(stub_model(image_size=128), mode="native", pad_value=0.3)
    shape = (100, 90)  # smaller than S: one window, centred, padding on both sides
    square = _square(shape, (40, 72), (20, 52))
    window = predictor.window_for(shape, None, None, mask=square)
    assert window == ((100 - 128) // 2, (90 - 128) // 2) == (-14, -19)
    full_image = predictor.model_input(square[None, None], window)  # padded with the image pad value 0.3
    placed = predictor.mask_to_model(square, shape, window)
    on_slice = torch.zeros(1, 1, 128, 128)
    on_slice[..., 14:114, 19:109] = 1.0  # the slice's pixels inside the window
    expected = _downsample(torch.where(on_slice > 0, 2 * MASK_LOGIT * full_image - MASK_LOGIT, 0.0), 32)
    np.testing.assert_allclose(placed.numpy(), expected.numpy(), atol=1e-4)
    assert float(placed[0, 0, :3].abs().max()) == 0.0  # rows 0..11 of the window are padding: 0 logits


def test_longest_mode_equals_the_previous_computation(tiny_sam):
    model = tiny_sam("sam_vit_tiny_test", num_classes=1)
    predictor = SlicePredictor(model, EmbeddingCache(), mode="longest")
    shape = (90, 120)
    rng = np.random.default_rng(0)
    mask = (rng.standard_normal((50, 60)) * 5).astype(np.float32)  # logits at another resolution
    # what decode_slice_prompts did before: bilinear to the slice, then the image transform padded with 0
    old = F.interpolate(torch.as_tensor(mask)[None, None], size=shape, mode="bilinear", align_corners=False)
    old = ResizeTransform(shape, predictor.size).image_to_model(old)
    new = predictor.mask_to_model(mask, shape, window=(5, 5))  # a window is ignored in "longest" mode
    np.testing.assert_allclose(new.numpy(), _downsample(old, predictor.size // 4).numpy(), atol=1e-5)
    volume = rng.random((model.in_channels, 1, *shape)).astype(np.float32)
    box = BoxPrompt(30, 20, 80, 70)
    before = predictor.predict("v", volume, 0, box, mask_input=old)
    after = predictor.predict("v", volume, 0, box, mask=mask)
    np.testing.assert_allclose(after, before, atol=1e-4)


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny_test", "sam_vit_tiny_test"])
def test_native_predict_feeds_the_placed_mask_to_the_decoder(tiny_sam, name):
    model = tiny_sam(name, num_classes=1)
    cache = EmbeddingCache()
    predictor = SlicePredictor(model, cache, mode="native")
    shape = (200, 160)
    square = _square(shape, (148, 180), (100, 140))
    volume = np.random.default_rng(1).random((model.in_channels, 1, *shape)).astype(np.float32)
    seen = []
    decode = model.decode

    def recording(*args, **kwargs):
        seen.append(kwargs.get("mask_inputs"))
        return decode(*args, **kwargs)

    model.decode = recording
    try:
        logits = predictor.predict("v", volume, 0, mask=square)  # a mask-only prompt
        weaker = predictor.predict("v", volume, 0, mask=square * 0.6)  # same window, other logits
    finally:
        del model.decode
    assert logits.shape == shape and np.isfinite(logits).all()
    assert [key[1] for key in cache._entries] == [(0, 72, 32)]  # the window holding the mask, encoded once
    np.testing.assert_allclose(seen[0].numpy(), predictor.mask_to_model(square, shape, (72, 32)).numpy())
    np.testing.assert_allclose(seen[1].numpy(), predictor.mask_to_model(square * 0.6, shape, (72, 32)).numpy())
    assert not np.allclose(logits, weaker)  # the decoder reads the mask
    with pytest.raises(ValueError, match="not both"):
        predictor.predict("v", volume, 0, mask=square, mask_input=seen[0])


def test_window_for_joins_points_with_the_mask_and_a_box_wins(stub_model):
    predictor = SlicePredictor(stub_model(image_size=64), mode="native")
    shape = (100, 150)  # windows y 0/32/36, x 0/32/64/86
    mask = _square(shape, (70, 95), (110, 140))
    assert predictor.window_for(shape, None, None, mask=mask) == (36, 86)
    # a click far to the left widens the extent: the window holding most of both moves left
    assert predictor.window_for(shape, None, np.array([[70.0, 80.0]]), mask=mask) == (36, 64)
    box = BoxPrompt(5, 5, 30, 30)
    assert predictor.window_for(shape, box, None, mask=mask) == predictor.window_for(shape, box) == (0, 0)
    assert predictor.window_for(shape, None, None, mask=np.zeros(shape)) == predictor.window_for(shape, None)
