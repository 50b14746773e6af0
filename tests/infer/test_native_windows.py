""""native" mode: S x S windows at the slice's own resolution (what the trainer trains on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from infer_shapes import sphere

from medsam_kit.infer import EmbeddingCache, PropagationOptions, ResizeTransform, SlicePredictor, segment_prompted
from medsam_kit.infer.slice_predictor import OUTSIDE_LOGIT
from medsam_kit.infer.volume import coarse_label_volume
from medsam_kit.prompts import BoxPrompt, PromptSet, SlicePrompts, tight_box


def test_window_transform_maps_by_offset_only_and_round_trips():
    tf = ResizeTransform((100, 150), 64, window=(10, 20))
    assert tf.resized_yx == (64, 64) and tf.scale_xy == (1.0, 1.0)
    np.testing.assert_allclose(tf.box_to_model(BoxPrompt(30, 15, 70, 45)), [10, 5, 49, 34])
    box = BoxPrompt(21.5, 12.25, 80.5, 70.0)
    np.testing.assert_allclose(tf.box_from_model(tf.box_to_model(box)).as_tuple(), box.as_tuple())
    np.testing.assert_allclose(tf.points_to_model([[20, 10], [25.5, 11]]), [[0, 0], [5.5, 1]])
    edge = ResizeTransform((100, 150), 64, window=(36, 86))  # flush with the slice's far corner
    assert edge.resized_yx == (64, 64)
    small = ResizeTransform((40, 50), 64, window=(0, 0))
    assert small.resized_yx == (40, 50)
    image = torch.arange(100 * 150, dtype=torch.float32).reshape(1, 1, 100, 150)
    np.testing.assert_array_equal(tf.image_to_model(image)[0, 0].numpy(), image[0, 0, 10:74, 20:84].numpy())
    back = tf.mask_to_slice(torch.ones(64, 64))
    assert back.shape == (100, 150) and float(back[10:74, 20:84].min()) == 1.0
    assert float(back[:10].max()) == OUTSIDE_LOGIT and float(back[:, 84:].max()) == OUTSIDE_LOGIT


def test_window_grid_and_choice(stub_model):
    predictor = SlicePredictor(stub_model(image_size=64), mode="native")
    assert predictor.windows((100, 150)) == [(y, x) for y in (0, 32, 36) for x in (0, 32, 64, 86)]
    assert predictor.windows((50, 60)) == [(-7, -2)]  # centred: (n - S) // 2, padding on both sides
    assert predictor.windows((40, 150)) == [(-12, x) for x in (0, 32, 64, 86)]
    assert predictor.window_for((100, 150), BoxPrompt(100, 60, 140, 95)) == (36, 86)
    assert predictor.window_for((100, 150), BoxPrompt(40, 40, 60, 60)) == (32, 32)
    assert predictor.window_for((100, 150), None, np.array([[5.0, 5.0]])) == (0, 0)
    with pytest.raises(ValueError, match="mode"):
        SlicePredictor(stub_model(), mode="tiles")


def test_native_propagation_and_coarse_on_slices_larger_than_the_model(stub_model):
    truth = sphere((20, 100, 150), (10, 60, 100), (6, 18, 25))
    image = truth[None].astype(np.float32)
    model = stub_model(image_size=64)
    cache = EmbeddingCache()
    predictor = SlicePredictor(model, cache, batch_size=4, mode="native")
    prompts = PromptSet({1: {10: SlicePrompts(boxes=(tight_box(truth[10]),))}})
    labels = segment_prompted(predictor, "vol", image, prompts, PropagationOptions(min_area=1)).labels()
    np.testing.assert_array_equal(labels == 1, truth)  # no resizing: the stub's answer is exact
    slices = [key[1][0] for key in cache._entries]
    # a slice is encoded in at most two windows (the prefetched one of the travel direction, and the
    # centred one once the shrinking object fits it) -- not in every window of the grid
    assert max(slices.count(z) for z in set(slices)) <= 2 and len(slices) < 2 * 20
    assert (10, *predictor.window_for((100, 150), tight_box(truth[10]))) in {key[1] for key in cache._entries}
    coarse = coarse_label_volume(SlicePredictor(model, EmbeddingCache(), mode="native"), "v", image)
    np.testing.assert_array_equal(coarse, truth.astype(np.uint8))  # all windows together cover the slice


def test_native_second_click_in_the_same_window_does_no_encoder_work(stub_model):
    image = np.zeros((1, 1, 100, 150), np.float32)
    predictor = SlicePredictor(stub_model(image_size=64), mode="native")
    predictor.predict("v", image, 0, BoxPrompt(40, 40, 60, 60))  # not inside the centred window: grid window
    calls = predictor.cache.encoder_calls
    predictor.predict("v", image, 0, BoxPrompt(38, 40, 62, 58), points=np.array([[50.0, 50.0]]))
    assert predictor.cache.encoder_calls == calls == 1


def test_slice_smaller_than_the_model_is_centred_and_maps_exactly(stub_model):
    predictor = SlicePredictor(stub_model(image_size=64), mode="native", pad_value=-1.0)
    tf = predictor.transform((40, 50))
    assert tf.window == (-12, -7) and tf.resized_yx == (40, 50)
    assert tf.window_span == ((0, 0), (12, 7), (40, 50))
    box = BoxPrompt(3.5, 0.0, 50.0, 27.25)
    np.testing.assert_allclose(tf.box_to_model(box), [10.5, 12.0, 56.0, 38.25])
    assert tf.box_from_model(tf.box_to_model(box)).as_tuple() == box.as_tuple()  # exact round trip
    points = np.array([[0.0, 0.0], [49.0, 39.0], [12.5, 7.25]])
    np.testing.assert_array_equal(tf.points_to_model(points), points + [7, 12])
    np.testing.assert_array_equal(tf.points_from_model(tf.points_to_model(points)), points)

    image = torch.arange(40 * 50, dtype=torch.float32).reshape(1, 1, 40, 50)
    model_input = tf.image_to_model(image)[0, 0]
    np.testing.assert_array_equal(model_input[12:52, 7:57].numpy(), image[0, 0].numpy())
    for pad in (model_input[:12], model_input[52:], model_input[:, :7], model_input[:, 57:]):  # both sides
        assert pad.numel() and float(pad.min()) == float(pad.max()) == -1.0
    np.testing.assert_array_equal(tf.mask_to_slice(model_input).numpy(), image[0, 0].numpy())  # exact inverse


def test_window_choice_prefers_the_slice_centred_window(stub_model):
    predictor = SlicePredictor(stub_model(image_size=64), mode="native")
    assert predictor.window_for((40, 50), BoxPrompt(1, 2, 30, 38)) == (-12, -7)
    # larger slice: the centred window (18, 43) when it holds the whole box, else the grid rule
    assert predictor.window_for((100, 150), BoxPrompt(60, 30, 90, 70)) == (18, 43)
    assert predictor.window_for((100, 150), BoxPrompt(40, 40, 60, 60)) == (32, 32)


@pytest.mark.parametrize("shape_yx", [(40, 50), (40, 150)])
def test_native_prediction_and_coarse_on_slices_smaller_than_the_model(stub_model, shape_yx):
    ny, nx = shape_yx
    truth = sphere((12, ny, nx), (6, ny // 2 - 3, nx // 2 + 4), (5, 12, 14))
    image = truth[None].astype(np.float32)
    model = stub_model(image_size=64)
    predictor = SlicePredictor(model, mode="native")
    prompts = PromptSet({1: {6: SlicePrompts(boxes=(tight_box(truth[6]),))}})
    labels = segment_prompted(predictor, "vol", image, prompts, PropagationOptions(min_area=1)).labels()
    np.testing.assert_array_equal(labels == 1, truth)  # no resizing, exact mapping: the stub's answer is exact
    coarse = coarse_label_volume(SlicePredictor(model, EmbeddingCache(), mode="native", pad_value=1.0), "v", image)
    # padding that looks like foreground (pad_value 1) never lands on the slice
    np.testing.assert_array_equal(coarse, truth.astype(np.uint8))
