"""Embedding cache: byte bound, LRU order, and no encoder work for a second prompt."""

from __future__ import annotations

import numpy as np
import torch

from medsam_kit.infer import EmbeddingCache, PropagationOptions, Segmenter
from medsam_kit.models.segmenter_model import Features
from medsam_kit.prompts import BoxPrompt, PromptSet, SlicePrompts


def _encode(images: torch.Tensor) -> Features:
    return Features(images.mean(dim=1, keepdim=True).repeat(1, 4, 1, 1), (images[:, :1].clone(),))


def _load(indices):
    return torch.stack([torch.full((2, 8, 8), float(z)) for z in indices])


def test_cache_bytes_never_exceed_the_bound_and_lru_evicts_oldest():
    per_slice = (4 * 8 * 8 + 8 * 8) * 4  # image_embed + one high-res map, float32
    cache = EmbeddingCache(max_bytes=3 * per_slice + 10)
    peak = 0
    for z in range(10):
        out = cache.features("vol", [z], _load, _encode)
        peak = max(peak, cache.nbytes)
        assert float(out.image_embed[0, 0, 0, 0]) == z
    assert peak <= cache.max_bytes
    assert len(cache) == 3 and cache.evictions == 7
    assert [k[1] for k in cache._entries] == [7, 8, 9]
    cache.features("vol", [7], _load, _encode)  # hit: 7 becomes most recent
    cache.features("vol", [0], _load, _encode)  # miss: evicts 8, the least recently used
    assert ("vol", 8) not in cache and ("vol", 7) in cache
    cache.features("other", [1, 2], _load, _encode)  # evicts 9 and 7 (least recent first)
    assert cache.usage_by_volume() == {"vol": (per_slice, 1), "other": (2 * per_slice, 2)}
    cache.clear("other")
    assert cache.usage_by_volume() == {"vol": (per_slice, 1)} and cache.nbytes == per_slice


def test_cache_encodes_only_missing_slices_in_batches():
    cache = EmbeddingCache()
    cache.features("vol", [0, 1, 2], _load, _encode, batch_size=2)
    assert (cache.encoder_calls, cache.encoded_slices) == (2, 3)
    out = cache.features("vol", [2, 3, 0], _load, _encode, batch_size=2)
    assert (cache.encoder_calls, cache.encoded_slices) == (3, 4)
    assert out.image_embed[:, 0, 0, 0].tolist() == [2.0, 3.0, 0.0]
    assert cache.features("other", [0], _load, _encode) is not None and cache.encoded_slices == 5


def test_entry_larger_than_bound_is_returned_not_kept():
    cache = EmbeddingCache(max_bytes=16)
    out = cache.features("vol", [0, 1], _load, _encode)
    assert len(out) == 2 and len(cache) == 0 and cache.nbytes == 0


def test_second_prompt_on_same_volume_does_no_encoder_work(tiny_sam):
    model = tiny_sam("sam_vit_tiny_test")
    volume = np.random.default_rng(0).random((6, 40, 56)).astype(np.float32)
    names = {0: "background", 1: "a", 2: "b", 3: "c"}
    # One click, no propagation: exactly the clicked slice is encoded.
    segmenter = Segmenter(model, label_names=names, propagation=PropagationOptions(propagate=False))
    segmenter.segment_volume(volume, PromptSet({1: {3: SlicePrompts(boxes=(BoxPrompt(5, 5, 30, 25),))}}))
    assert segmenter.cache_stats()["encoded_slices"] == 1
    calls = segmenter.cache_stats()["encoder_calls"]
    # Second click on the same volume (a new array with the same content): no encoder work.
    result = segmenter.segment_volume(volume.copy(), {2: {3: SlicePrompts(boxes=(BoxPrompt(20, 10, 50, 35),))}})
    assert segmenter.cache_stats()["encoder_calls"] == calls and segmenter.cache_stats()["hits"] >= 1
    assert result.labels.shape == volume.shape

    # Automatic mode encodes every slice once; prompted propagation afterwards encodes nothing.
    segmenter = Segmenter(model, label_names=names)
    segmenter.segment_volume(volume)
    stats = segmenter.cache_stats()
    assert stats["encoded_slices"] == volume.shape[0]
    segmenter.segment_volume(volume, PromptSet({1: {2: SlicePrompts(boxes=(BoxPrompt(0, 0, 56, 40),))}}))
    assert segmenter.cache_stats()["encoder_calls"] == stats["encoder_calls"]
    assert segmenter.cache_stats()["encoded_slices"] == volume.shape[0]


def test_segment_slice_second_click_reuses_the_embedding(tiny_sam):
    segmenter = Segmenter(tiny_sam("sam2.1_hiera_tiny_test"))
    image = np.random.default_rng(1).random((50, 70)).astype(np.float32)
    mask = segmenter.segment_slice(image, box=(5, 5, 20, 20))
    assert mask.shape == (50, 70) and mask.dtype == bool
    calls = segmenter.cache_stats()["encoder_calls"]
    segmenter.segment_slice(image, points=[[10, 12], [40, 30]], point_labels=[1, 0])
    assert calls == 1 and segmenter.cache_stats()["encoder_calls"] == 1
