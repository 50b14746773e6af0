"""PCSW prompts of unlabeled volumes: computed once per volume, refreshed after N steps, saved with the state."""

from __future__ import annotations

import numpy as np
import torch
from conftest import object_volume

from medsam_kit.methods.sss import PcswCache, SSSMethod, SSSParams, coarse_class_volume
from medsam_kit.prompts import pcsw_prompts


def test_cache_computes_each_volume_once_and_refreshes_after_n_steps():
    calls = []

    def coarse_volume(case_id):
        calls.append(case_id)
        return object_volume()

    cache = PcswCache(coarse_volume, num_classes=2, refresh=200)
    first = cache.prompts("a", step=0)
    assert [p.cls for p in first] == [1, 2]
    rv = first[0]
    # object of class 1: slices 1..4, rows 20..43, columns 24..51. PCSW tries windows of 2..3 of the 6 slices,
    # shortest first: the first 2-slice window on the object is accepted; the key slice is its first (ties).
    assert rv.box == (24.0, 20.0, 52.0, 44.0) and (rv.start, rv.stop, rv.key_slice) == (1, 3, 1)
    assert rv.point == (37.0, 31.0)
    assert pcsw_prompts(object_volume(), [1])[1].window == (rv.start, rv.stop)
    for step in (1, 50, 199):
        assert cache.prompts("a", step) is first
    cache.prompts("b", 150)
    assert calls == ["a", "b"] and cache.computed == 2
    cache.prompts("a", 200)  # 200 steps old: recomputed
    cache.prompts("b", 200)  # 50 steps old: kept
    assert calls == ["a", "b", "a"]
    cache.prompts("b", 350)
    assert calls == ["a", "b", "a", "b"]
    never = PcswCache(coarse_volume, num_classes=2, refresh=0)
    never.prompts("a", 0)
    never.prompts("a", 10_000)
    assert never.computed == 1

    restored = PcswCache(coarse_volume, num_classes=2, refresh=200)
    restored.load_state_dict(cache.state_dict())
    assert restored.entries == cache.entries and restored.computed == cache.computed
    assert restored.prompts("a", 250) == cache.prompts("a", 250)
    assert calls == ["a", "b", "a", "b", "a"] and cache.computed == 4  # counted once per cache (nothing recomputed)


def test_cache_skips_missing_classes_and_fallbacks():
    labels = object_volume()
    labels[labels == 2] = 0
    labels[3, 70:72, 70:78] = 2  # class 2: a few stray voxels on one slice: below min_voxels
    cache = PcswCache(lambda _: labels, num_classes=3, min_voxels=20)
    assert [p.cls for p in cache.prompts("a", 0)] == [1]


def test_coarse_class_volume_covers_slices_larger_than_the_model(fake_context):
    context = fake_context(image_size=64, num_classes=2)
    model = context.model.eval()
    image = torch.rand(1, 3, 80, 96)
    labels = coarse_class_volume(model, image, batch_size=2)
    assert labels.shape == (3, 80, 96) and labels.dtype == np.uint8 and labels.max() <= 2
    with torch.no_grad():  # one window of exactly S x S equals the plain coarse head
        crop = image[:, :, :64, :64].permute(1, 0, 2, 3)
        direct = model.coarse_logits(model.encode(crop)).argmax(1).numpy()
    np.testing.assert_array_equal(coarse_class_volume(model, image[:, :, :64, :64]), direct)


def _unlabeled(batch, size=64, z=2):
    return {"image": torch.rand(batch, 1, size, size), "case_id": ["u0", "u1", "u0", "u1"][:batch],
            "patch_origin": torch.tensor([[z, 8, 8]] * batch)}


def test_method_counts_teacher_coarse_passes_per_volume_and_refresh(fake_context):
    context = fake_context(image_size=64, num_classes=2, val_batch_size=8)
    method = SSSMethod(SSSParams(pcsw_refresh=2, dfe=False))
    method.setup(context)
    teacher = method.teacher.model
    calls = []
    original = teacher.coarse_logits
    teacher.coarse_logits = lambda features: calls.append(len(features)) or original(features)
    labels = torch.zeros(2, 64, 64, dtype=torch.int64)
    labels[:, 10:30, 10:40] = 1
    batch = {"image": torch.rand(2, 1, 64, 64), "label": labels, "unlabeled": _unlabeled(2)}
    # Volumes are (6, 80, 80): 4 windows of 64 x 64 per slice, 24 windows in passes of val_batch_size 8.
    volume_pass = [8, 8, 8]
    weak_pass = [2]  # the weak view, before the prompts are looked up
    sizes = []
    for step in range(5):
        method.loss(context.model, batch, step)
        sizes.append(list(calls))
        calls.clear()
    assert method.pcsw.computed == 6  # two volumes at steps 0, 2 and 4
    assert sizes[0] == weak_pass + volume_pass * 2
    assert sizes[1] == weak_pass and sizes[3] == weak_pass
    assert sizes[2] == weak_pass + volume_pass * 2 and sizes[4] == sizes[2]


def test_prompts_carry_each_slice_of_the_accepted_object():
    labels = object_volume()
    labels[[2, 4], 20:44, 40:52] = 0  # class 1 is narrower on slices 2 and 4 (columns 24..39)
    rv = PcswCache(lambda _: labels, num_classes=2).prompts("a", 0)[0]
    assert (rv.start, rv.stop, rv.key_slice) == (1, 3, 1)
    assert [z for z, _, _ in rv.slices] == [1, 2]  # the accepted component on both slices of its window
    (_, box1, point1), (_, box2, point2) = rv.slices
    assert box1 == rv.box == (24.0, 20.0, 52.0, 44.0) and point1 == rv.point
    assert box2 == (24.0, 20.0, 40.0, 44.0)  # slice 2's own tight box, not the key slice's
    assert labels[2, int(point2[1]), int(point2[0])] == 1  # its point lies on the object
    cache = PcswCache(lambda _: labels, num_classes=2)
    cache.prompts("a", 0)
    restored = PcswCache(lambda _: labels, num_classes=2)
    restored.load_state_dict(cache.state_dict())
    assert restored.entries == cache.entries and restored.entries["a"][1][0].slices == rv.slices
