"""Session store (LRU under a byte bound), model runner (lock, deferred embedding drops), colours, file helpers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from medsam_kit.infer import EmbeddingCache
from medsam_kit.io import Volume
from medsam_kit.models.segmenter_model import Features
from medsam_kit.serve import SessionStore, label_color, label_table
from medsam_kit.serve.errors import ApiError
from medsam_kit.serve.files import upload_suffix
from medsam_kit.serve.runner import ModelRunner


def _volume(nbytes: int) -> Volume:
    return Volume(np.zeros((1, 1, nbytes), np.uint8))


def test_store_evicts_least_recently_used_and_remembers_them():
    store = SessionStore(max_bytes=300)
    a, _ = store.add(_volume(100))
    b, _ = store.add(_volume(100))
    c, _ = store.add(_volume(100))
    store.get(a.id)  # a is now the most recently used
    d, _ = store.add(_volume(100))
    assert [s.id for s in store.list()] == [c.id, a.id, d.id] and store.nbytes == 300
    with pytest.raises(ApiError) as info:
        store.get(b.id)
    assert info.value.status == 404 and "evicted" in info.value.detail
    with pytest.raises(ApiError) as info:
        store.get("f" * 32)
    assert info.value.status == 404 and "unknown volume id" in info.value.detail
    with pytest.raises(ApiError) as info:
        store.add(_volume(301))
    assert info.value.status == 413 and len(store) == 3
    removed, _ = store.remove(c.id)
    assert removed is c and len(store) == 2 and store.evictions == 1


def test_embeddings_count_against_the_bound_and_are_dropped_with_their_session():
    store = SessionStore(max_bytes=1000)
    a, _ = store.add(_volume(100))
    b, _ = store.add(_volume(100))
    usage = {"hash_a": (600, 6)}
    assert store.record_embeddings(a.id, {"hash_a"}, usage) == set()
    assert a.nbytes == 700 and a.embedding_entries == 6
    # b's embeddings push the total over the bound: a (least recently used) goes, with its cache ids
    drop = store.record_embeddings(b.id, {"hash_b"}, {**usage, "hash_b": (250, 2)})
    assert drop == {"hash_a"} and [s.id for s in store.list()] == [b.id]
    # a session deleted while it was being segmented: its new ids are dropped, ids in use are kept
    c, _ = store.add(_volume(10))
    store.remove(c.id)
    assert store.record_embeddings(c.id, {"hash_c", "hash_b"}, {"hash_b": (250, 2), "hash_c": (5, 1)}) == {"hash_c"}
    _, drop = store.remove(b.id)
    assert drop == {"hash_b"}


def _features(volume_id, cache: EmbeddingCache, slices: int = 2) -> None:
    for z in range(slices):
        cache.put((volume_id, z), Features(torch.zeros(1, 4, 2, 2)))


class _BlockingSegmenter:
    """Stands in for a Segmenter: a real EmbeddingCache; ``segment_volume`` embeds "v2" and waits for a signal."""

    def __init__(self) -> None:
        self.cache = EmbeddingCache(1 << 20)
        self.started, self.release = threading.Event(), threading.Event()

    def segment_volume(self, volume, prompts, refine=None):
        self.started.set()
        self.release.wait(10)
        _features("v2", self.cache)
        self.cache.encoded_slices += 2
        return "result"


def test_runner_defers_drops_while_the_model_is_busy_and_reports_encoder_work():
    segmenter = _BlockingSegmenter()
    _features("v1", segmenter.cache, slices=3)
    runner = ModelRunner(segmenter)
    reports = []
    worker = threading.Thread(target=lambda: reports.append(runner.segment(_volume(1), None)))
    worker.start()
    assert segmenter.started.wait(10)
    runner.drop({"v1"})  # the lock is held: queued, not waited for
    assert ("v1", 0) in segmenter.cache
    segmenter.release.set()
    worker.join(10)
    assert ("v1", 0) not in segmenter.cache and ("v2", 0) in segmenter.cache  # cleared right after the release
    result, report = reports[0]
    assert result == "result" and report.encoded_slices == 2 and report.new_ids == {"v2"}
    assert report.usage == {"v1": (3 * 64, 3), "v2": (2 * 64, 2)}  # snapshot taken before the queued drop
    assert segmenter.cache.usage_by_volume() == {"v2": (2 * 64, 2)}
    runner.drop({"v2"})  # lock free: cleared at once
    assert len(segmenter.cache) == 0


def test_palette_matches_overlays_and_stays_distinct():
    import matplotlib

    tab10 = matplotlib.colormaps["tab10"]
    for value in range(1, 11):  # the overlay PNGs draw label v with tab10(v - 1)
        assert label_color(value) == tuple(round(c * 255) for c in tab10(value - 1)[:3])
    colours = [label_color(v) for v in range(1, 256)]
    assert len(set(colours)) == 255 and all(0 <= c <= 255 for rgb in colours for c in rgb)
    assert label_table({0: "background", 2: "b", 1: "a"}) == [{"value": 1, "name": "a", "color": list(label_color(1))},
                                                              {"value": 2, "name": "b", "color": list(label_color(2))}]
    with pytest.raises(ValueError, match="background"):
        label_color(0)


@pytest.mark.parametrize(("filename", "expected"), [("a.NII.GZ", ".nii.gz"), ("dir/../b.nrrd", ".nrrd"),
                                                    ("c.seg.nrrd", ".nrrd"), ("d.nii", ".nii"), ("e.mha", ".mha")])
def test_upload_suffix_only_picks_a_reader(filename, expected):
    assert upload_suffix(filename) == expected


@pytest.mark.parametrize("filename", ["a.nhdr", "b.mhd", "c.hdr", "d.dcm", "e", "f.nii.zip", "/etc/passwd"])
def test_upload_suffix_refuses_other_files(filename):
    with pytest.raises(ApiError) as info:
        upload_suffix(filename)
    assert info.value.status == 415
