"""2D / 2.5D / 3D samplers: shapes, content, determinism, foreground oversampling, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medsam_kit.data.case import Case
from medsam_kit.data.samplers import PatchSampler, SliceSampler, StackSampler
from medsam_kit.io.geometry import Geometry


def _coded_case(case_id="a", shape=(20, 40, 50), channels=2, foreground_slices=(7,), labeled=True) -> Case:
    """Image values encode the voxel index (z*10000 + y*100 + x, + 0.5 per channel), so content is checkable.

    Foreground is a small 4x4 square (label 1) in each of ``foreground_slices`` near a corner, so a
    random 32x32 crop or a random slice rarely hits it by chance.
    """
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    code = (z * 10000 + y * 100 + x).astype(np.float32)
    image = np.stack([code + 0.5 * c for c in range(channels)])
    label = np.zeros(shape, np.uint8)
    for s in foreground_slices:
        label[s, 2:6, 3:7] = 1
    return Case(
        case_id, image, Geometry(), tuple(f"ch{c}" for c in range(channels)), label if labeled else None
    )


def _has_foreground(sample: dict) -> bool:
    return bool(sample["label"].any())


def test_slice_sampler_shapes_and_content():
    case = _coded_case()
    sampler = SliceSampler([case], patch_size=(32, 32), num_samples=20, seed=0)
    assert len(sampler) == 20
    for sample in (sampler[i] for i in range(len(sampler))):
        assert sample["image"].shape == (2, 32, 32) and sample["image"].dtype == torch.float32
        assert sample["label"].shape == (32, 32) and sample["label"].dtype == torch.int64
        z, y0, x0 = sample["patch_origin"].tolist()
        assert sample["slice_index"] == z and sample["case_id"] == "a"
        np.testing.assert_array_equal(sample["image"].numpy(), case.image[:, z, y0 : y0 + 32, x0 : x0 + 32])
        np.testing.assert_array_equal(sample["label"].numpy(), case.label[z, y0 : y0 + 32, x0 : x0 + 32])


def test_small_slices_are_padded_and_center_crop_is_centred():
    case = _coded_case(shape=(3, 10, 12), foreground_slices=(1,))
    sampler = SliceSampler([case], patch_size=(16, 16), crop="center", foreground_probability=0.0, seed=0)
    sample = sampler[0]
    z, y0, x0 = sample["patch_origin"].tolist()
    assert (y0, x0) == ((10 - 16) // 2, (12 - 16) // 2)
    image = sample["image"].numpy()
    np.testing.assert_array_equal(image[:, -y0 : -y0 + 10, -x0 : -x0 + 12], case.image[:, z])
    assert image[:, :-y0].max() == 0 and image[:, :, :-x0].max() == 0  # constant (zero) padding
    edge = SliceSampler([case], patch_size=(16, 16), crop="center", pad_mode="edge", seed=0)[0][
        "image"
    ].numpy()
    np.testing.assert_array_equal(edge[:, 0, -x0 : -x0 + 12], case.image[:, z, 0])  # first row repeated


def test_samplers_are_deterministic_for_a_seed_and_change_with_seed_and_epoch():
    cases = [_coded_case("a"), _coded_case("b", foreground_slices=(3, 12))]

    def draw(sampler):
        return [(s["case_id"], s["patch_origin"].tolist()) for s in (sampler[i] for i in range(len(sampler)))]

    first = draw(SliceSampler(cases, (32, 32), num_samples=30, seed=5))
    assert first == draw(SliceSampler(cases, (32, 32), num_samples=30, seed=5))
    assert first != draw(SliceSampler(cases, (32, 32), num_samples=30, seed=6))
    sampler = SliceSampler(cases, (32, 32), num_samples=30, seed=5)
    sampler.set_epoch(1)
    assert draw(sampler) != first
    # Same samples through a DataLoader, batched: (B, C, Y, X).
    batch = next(iter(DataLoader(SliceSampler(cases, (32, 32), num_samples=30, seed=5), batch_size=30)))
    assert batch["image"].shape == (30, 2, 32, 32) and batch["label"].shape == (30, 32, 32)
    assert [tuple(o) for o in batch["patch_origin"].tolist()] == [tuple(o) for _, o in first]


def test_foreground_probability_one_gives_foreground_in_every_labeled_sample():
    cases = [_coded_case("a"), _coded_case("b", foreground_slices=(19,))]
    for crop in ("random", "center"):
        sampler = SliceSampler(
            cases, (32, 32), foreground_probability=1.0, crop=crop, num_samples=100, seed=1
        )
        assert all(_has_foreground(sampler[i]) for i in range(len(sampler)))
    stacks = StackSampler(cases, k=3, patch_size=(24, 24), foreground_probability=1.0, num_samples=50, seed=2)
    assert all(_has_foreground(stacks[i]) for i in range(len(stacks)))


def test_foreground_ratio_follows_the_probability():
    # One foreground slice of 20, in a corner: a uniform sample hits it in well under 5 % of draws.
    cases = [_coded_case("a")]
    rates = {}
    for p in (0.0, 0.5):
        sampler = SliceSampler(cases, (32, 32), foreground_probability=p, num_samples=400, seed=3)
        rates[p] = np.mean([_has_foreground(sampler[i]) for i in range(len(sampler))])
    assert rates[0.0] < 0.06
    assert 0.42 < rates[0.5] < 0.62


def test_stack_sampler_edge_padding_at_first_and_last_slice():
    case = _coded_case(shape=(6, 20, 20), foreground_slices=(2,))
    sampler = StackSampler([case], k=4, sequential=True)
    assert len(sampler) == 6
    first, last = sampler[0], sampler[5]
    assert first["image"].shape == (2, 4, 20, 20) and first["label"].shape == (4, 20, 20)
    assert first["slice_indices"].tolist() == [0, 0, 0, 1]  # anchor 0 covers slices -2..1
    assert last["slice_indices"].tolist() == [3, 4, 5, 5]  # anchor 5 covers slices 3..6
    for sample in (first, last):
        np.testing.assert_array_equal(sample["image"].numpy(), case.image[:, sample["slice_indices"].numpy()])
        np.testing.assert_array_equal(sample["label"].numpy(), case.label[sample["slice_indices"].numpy()])
    assert [sampler[i]["slice_index"] for i in range(6)] == list(range(6))


def test_sequential_slices_cover_every_slice_of_every_case():
    cases = [
        _coded_case("a", shape=(3, 8, 8), foreground_slices=()),
        _coded_case("b", shape=(2, 8, 8), foreground_slices=()),
    ]
    sampler = SliceSampler(cases, sequential=True)
    assert [(sampler[i]["case_id"], sampler[i]["slice_index"]) for i in range(len(sampler))] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
    ]


def test_patch_sampler_shapes_padding_and_oversampling():
    case = _coded_case(shape=(6, 40, 50), foreground_slices=(1,))
    sampler = PatchSampler([case], (8, 16, 16), foreground_probability=1.0, num_samples=40, seed=4)
    for sample in (sampler[i] for i in range(len(sampler))):
        assert sample["image"].shape == (2, 8, 16, 16) and sample["label"].shape == (8, 16, 16)
        assert _has_foreground(sample)
        z0, y0, x0 = sample["patch_origin"].tolist()
        assert -2 <= z0 <= 0  # depth 8 > 6 slices: two padding slices, placed at random around the volume
        image = sample["image"].numpy()
        np.testing.assert_array_equal(image[:, -z0 : 6 - z0], case.image[:, :, y0 : y0 + 16, x0 : x0 + 16])
        assert image[:, :-z0].max(initial=0) == 0 and image[:, 6 - z0 :].max(initial=0) == 0
    default = PatchSampler([case], (4, 16, 16), num_samples=300, seed=5)
    assert default.foreground_probability == pytest.approx(1 / 3)  # nnU-Net's oversampling rate
    assert 0.27 < np.mean([_has_foreground(default[i]) for i in range(len(default))]) < 0.45


def test_unlabeled_samples_have_no_label_and_labeled_needs_labels():
    case = _coded_case(labeled=False)
    sample = SliceSampler([case], (32, 32), labeled=False, foreground_probability=1.0)[0]
    assert "label" not in sample and sample["image"].shape == (2, 32, 32)
    assert "label" not in PatchSampler([case], (4, 8, 8), labeled=False)[0]
    with pytest.raises(ValueError, match="has no label"):
        SliceSampler([case], (32, 32), foreground_probability=0.0)[0]
    with pytest.raises(ValueError, match="crop"):
        SliceSampler([case], crop="middle")
