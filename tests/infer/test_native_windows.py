""""native" mode: S x S windows at the slice's own resolution (what the trainer trains on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import sphere

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
    assert predictor.windows((50, 60)) == [(0, 0)]
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
    window = predictor.window_for((100, 150), tight_box(truth[10]))
    assert all(key[1][1:] == window for key in cache._entries)  # one window per slice was encoded
    coarse = coarse_label_volume(SlicePredictor(model, EmbeddingCache(), mode="native"), "v", image)
    np.testing.assert_array_equal(coarse, truth.astype(np.uint8))  # all windows together cover the slice


def test_native_second_click_in_the_same_window_does_no_encoder_work(stub_model):
    image = np.zeros((1, 1, 100, 150), np.float32)
    predictor = SlicePredictor(stub_model(image_size=64), mode="native")
    predictor.predict("v", image, 0, BoxPrompt(40, 40, 60, 60))
    calls = predictor.cache.encoder_calls
    predictor.predict("v", image, 0, BoxPrompt(45, 38, 62, 58), points=np.array([[50.0, 50.0]]))
    assert predictor.cache.encoder_calls == calls == 1
