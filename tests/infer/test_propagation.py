"""Propagation logic (deterministic with a known-mask predictor) and multi-class assembly."""

from __future__ import annotations

import numpy as np
import pytest
from infer_shapes import sphere

from medsam_kit.infer import EmbeddingCache, LabelAssembler, PropagationOptions, SlicePredictor, segment_prompted
from medsam_kit.infer.volume import coarse_guide, coarse_label_volume, interior_point, propagate_object
from medsam_kit.prompts import BoxPrompt, PromptSet, SlicePrompts, tight_box


def _truth_predictor(truth: np.ndarray, calls: list):
    """predict(z, box, point) = the true mask of slice z inside the box, as logits; records (z, box, point)."""

    def predict(z, box, point=None):
        calls.append((z, box, point))
        inside = np.zeros(truth.shape[1:], bool)
        inside[int(box.y0):int(np.ceil(box.y1)), int(box.x0):int(np.ceil(box.x1))] = True
        return np.where(truth[z] & inside, 5.0, -5.0)

    return predict


def test_propagation_follows_the_object_and_stops_where_it_vanishes():
    truth = sphere((30, 40, 50), (14, 20, 25), (6, 12, 15))  # object on slices 8..20
    calls = []
    seeds = {14: np.where(truth[14], 5.0, -5.0)}
    result = propagate_object(_truth_predictor(truth, calls), 30, seeds, PropagationOptions(min_area=1))
    assert sorted(result) == list(range(8, 21))
    for z, logits in result.items():
        np.testing.assert_array_equal(logits > 0, truth[z])
    # it asked exactly one slice beyond each end (7 and 21), then stopped
    assert sorted(z for z, _, _ in calls) == [7, *range(8, 14), *range(15, 21), 21]


def test_propagation_box_comes_from_the_previous_mask():
    truth = sphere((10, 40, 40), (5, 20, 20), (4, 10, 10))
    calls = []
    seeds = {5: np.where(truth[5], 5.0, -5.0)}
    propagate_object(_truth_predictor(truth, calls), 10, seeds, PropagationOptions(min_area=1, box_margin=0))
    z, box, _ = calls[0]
    assert z == 6 and box == tight_box(truth[5])
    z, box, _ = next(c for c in calls if c[0] == 7)
    assert box == tight_box(truth[6])


def test_propagation_passes_the_previous_masks_most_interior_pixel_as_a_positive_point():
    # an L-shaped object: its box centre (x 12, y 12) is outside it, its most interior pixel is not
    truth = np.zeros((3, 30, 30), bool)
    truth[:, 4:21, 4:11] = True   # vertical bar, 7 wide: rows 4..20, columns 4..10
    truth[:, 14:21, 4:21] = True  # horizontal bar, 7 tall: rows 14..20, columns 4..20
    # (x, y) = (column, row): 4.24 px from the boundary, in the corner where the bars meet
    assert interior_point(truth[1]).tolist() == [[8.0, 16.0]] and not truth[1][12, 12]
    calls = []
    propagate_object(_truth_predictor(truth, calls), 3, {1: np.where(truth[1], 5.0, -5.0)}, PropagationOptions())
    assert sorted(z for z, _, _ in calls) == [0, 2]
    for _, box, point in calls:
        assert box == tight_box(truth[1])
        assert point.shape == (1, 2) and point.tolist() == [[8.0, 16.0]] and truth[1][16, 8]
    calls.clear()
    propagate_object(_truth_predictor(truth, calls), 3, {1: np.where(truth[1], 5.0, -5.0)},
                     PropagationOptions(interior_point=False))
    assert [point for _, _, point in calls] == [None, None]
    # the slice border counts as boundary: a mask filling a 5 x 7 slice peaks 3 px in (ties: first pixel)
    assert interior_point(np.ones((5, 7), bool)).tolist() == [[2.0, 2.0]]


def test_min_area_limit_distance_and_two_seeds():
    truth = np.zeros((20, 30, 30), bool)
    truth[2:18, 10:20, 10:20] = True
    truth[15, 10:12, 10:12] = True  # slices 15.. shrink to 4 pixels, below min_area
    truth[15:18] = False
    truth[15, 10:12, 10:12] = True
    calls = []
    result = propagate_object(_truth_predictor(truth, calls), 20, {8: np.where(truth[8], 5.0, -5.0)},
                              PropagationOptions(min_area=5, box_margin=0))
    assert sorted(result) == list(range(2, 15))
    calls.clear()
    result = propagate_object(_truth_predictor(truth, calls), 20, {8: np.where(truth[8], 5.0, -5.0)},
                              PropagationOptions(min_area=5, max_distance=2))
    assert sorted(result) == [6, 7, 8, 9, 10]
    calls.clear()
    seeds = {4: np.where(truth[4], 5.0, -5.0), 10: np.where(truth[10], 5.0, -5.0)}
    result = propagate_object(_truth_predictor(truth, calls), 20, seeds, PropagationOptions(min_area=5))
    assert sorted(result) == list(range(2, 15))
    assert all(4 < z < 10 for z, _, _ in calls if 4 <= z <= 10)  # never re-decodes a seed slice
    assert not PropagationOptions(propagate=False).propagate
    assert sorted(propagate_object(_truth_predictor(truth, []), 20, seeds, PropagationOptions(propagate=False))) \
        == [4, 10]


def test_segment_prompted_with_stub_model_recovers_the_object_and_encodes_in_batches(stub_model):
    truth = sphere((24, 45, 70), (12, 22, 35), (7, 15, 20))
    image = truth[None].astype(np.float32)
    model = stub_model(image_size=64)
    cache = EmbeddingCache()
    predictor = SlicePredictor(model, cache, batch_size=4)
    box = tight_box(truth[12])
    prompts = PromptSet({1: {12: SlicePrompts(boxes=(BoxPrompt(*box.as_tuple()),))}})
    labels = segment_prompted(predictor, "vol", image, prompts, PropagationOptions(min_area=2)).labels()
    dice = 2 * np.sum((labels == 1) & truth) / (np.sum(labels == 1) + truth.sum())
    assert dice > 0.97
    assert not labels[:5].any() and not labels[20:].any()  # outside the sphere's slices 5..19
    # slices were encoded at most once, mostly a batch at a time (not one call per slice)
    assert cache.encoded_slices == model.encoded_images <= 24 and model.encode_calls < cache.encoded_slices


def test_label_assembler_argmax_with_background_threshold():
    assembler = LabelAssembler((1, 2, 3), [1, 2], keep_probabilities=True)
    assembler.add(1, 0, np.array([[3.0, 3.0, -3.0], [0.5, -3.0, -3.0]]))
    assembler.add(2, 0, np.array([[-3.0, 4.0, -3.0], [0.1, -3.0, 1.0]]))
    np.testing.assert_array_equal(assembler.labels(0.5), [[[1, 2, 0], [1, 0, 2]]])
    np.testing.assert_array_equal(assembler.labels(0.7), [[[1, 2, 0], [0, 0, 2]]])
    assert assembler.probabilities[1][0, 0, 0] > 0.95


def test_coarse_pass_keeps_the_cache_bounded(stub_model):
    truth = sphere((40, 32, 32), (20, 16, 16), (10, 8, 8))
    model = stub_model(image_size=32)
    per_slice = 32 * 32 * 4
    cache = EmbeddingCache(max_bytes=6 * per_slice)
    predictor = SlicePredictor(model, cache, batch_size=4)
    coarse = coarse_label_volume(predictor, "v", truth[None].astype(np.float32))
    np.testing.assert_array_equal(coarse, truth.astype(np.uint8))
    assert cache.nbytes <= cache.max_bytes and len(cache) == 6 and cache.encoded_slices == 40


def test_coarse_channels_map_to_the_trainers_label_values(stub_model):
    truth = sphere((6, 32, 32), (3, 16, 16), (2, 8, 8))
    predictor = SlicePredictor(stub_model(image_size=32), EmbeddingCache())
    coarse = coarse_label_volume(predictor, "v", truth[None].astype(np.float32), class_values=[4])
    np.testing.assert_array_equal(coarse, np.where(truth, 4, 0))  # e.g. BraTS 2021 ET = 4 in channel 1


def _always_something(shape_yx, calls):
    """A decoder that answers every box with the whole box (it never says 'nothing here')."""

    def predict(z, box, point=None):
        calls.append((z, box, point))
        out = np.full(shape_yx, -5.0)
        out[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = 5.0
        return out

    return predict


def test_coarse_guide_ends_the_object_where_the_coarse_head_sees_none():
    truth = sphere((30, 40, 50), (14, 20, 25), (6, 12, 15))  # slices 8..20
    seeds = {14: np.where(truth[14], 5.0, -5.0)}
    unguided = propagate_object(_always_something(truth.shape[1:], []), 30, seeds, PropagationOptions(min_area=1))
    assert sorted(unguided) == list(range(30))  # box propagation alone never stops
    calls = []
    guided = propagate_object(_always_something(truth.shape[1:], calls), 30, seeds, PropagationOptions(min_area=1),
                              guide=coarse_guide(truth, min_area=1))
    assert sorted(guided) == list(range(8, 21))
    for z, box, _ in calls:  # every box is the coarse region's own box on that slice
        assert box == tight_box(truth[z])


def test_coarse_guide_takes_only_components_touching_the_previous_box():
    region = np.zeros((3, 40, 60), bool)
    region[:, 10:20, 5:15] = True  # the followed object
    region[1, 25:35, 40:55] = True  # same class elsewhere on slice 1 (a false positive)
    guide = coarse_guide(region, min_area=4)
    chosen = guide(1, region[0])
    np.testing.assert_array_equal(chosen, region[0])
    assert guide(1, np.pad(np.ones((2, 2), bool), ((30, 8), (45, 13)))).sum() == 150  # only the far one touches
    assert guide(2, np.pad(np.ones((2, 2), bool), ((36, 2), (0, 58)))) is None  # nothing overlaps that box
    empty = np.zeros_like(region)
    assert coarse_guide(empty)(1, region[0]) is None


def test_unknown_guide_is_refused():
    with pytest.raises(ValueError, match="guide"):
        PropagationOptions(guide="memory-of-the-future")
