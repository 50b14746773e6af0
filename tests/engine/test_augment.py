"""Batched spatial augmentation: exact flips / quarter turns, image-label alignment, padding, determinism."""

from __future__ import annotations

import pytest
import torch

from medsam_kit.engine.augment import AugmentParams, SpatialAugment, random_affines, warp_batch
from medsam_kit.engine.config import config_from_dict


def _batch(b=6, size=32):
    g = torch.Generator().manual_seed(1)
    label = torch.zeros(b, size, size, dtype=torch.int64)
    for i in range(b):  # an off-centre rectangle per sample, asymmetric so flips are visible
        y0, x0 = 3 + i % 6, 5 + 2 * (i % 7)
        label[i, y0:y0 + 9, x0:x0 + 5] = 1
        label[i, y0 + 12:y0 + 15, x0:x0 + 12] = 2
    image = torch.stack([label.float() / 2, torch.rand(b, size, size, generator=g)], dim=1)
    return {"image": image, "label": label}


def test_inactive_augmentation_returns_the_batch_unchanged():
    batch = _batch()
    assert SpatialAugment(AugmentParams())(batch, 3) is batch
    assert not AugmentParams(probability=1.0).active and not AugmentParams(rotate_deg=10).active


def test_flips_are_exact_and_move_image_and_label_together():
    batch = _batch()
    out = SpatialAugment(AugmentParams(probability=1.0, flip=1.0))(batch, 0)
    torch.testing.assert_close(out["image"], torch.flip(batch["image"], dims=(-2, -1)), rtol=0, atol=1e-6)
    assert torch.equal(out["label"], torch.flip(batch["label"], dims=(-2, -1)))


def test_quarter_turns_are_exact_permutations():
    batch = _batch(b=16)
    out = SpatialAugment(AugmentParams(probability=1.0, rot90=True), seed=4)(batch, 0)
    turns = set()
    for i in range(16):
        matches = [k for k in range(4) if torch.equal(out["label"][i], torch.rot90(batch["label"][i], k, (-2, -1)))]
        assert matches, f"sample {i} is not a quarter turn of its label"
        k = matches[0]
        torch.testing.assert_close(out["image"][i], torch.rot90(batch["image"][i], k, (-2, -1)), rtol=0, atol=1e-5)
        turns.add(k)
    assert len(turns) >= 3  # the turns are drawn, not fixed


def test_rotation_and_zoom_keep_image_and_label_aligned():
    batch = _batch()
    params = AugmentParams(probability=1.0, rotate_deg=30, scale=(0.8, 1.3), translate=0.1)
    out = SpatialAugment(params, seed=2)(batch, 7)
    assert not torch.equal(out["label"], batch["label"])
    assert set(out["label"].unique().tolist()) <= {0, 1, 2}  # still a label map
    from_image = (out["image"][:, 0] * 2).round().long()  # channel 0 is label / 2, warped bilinearly
    agreement = (from_image == out["label"]).float().mean()
    assert agreement > 0.97


def test_padding_takes_the_pad_value_and_background():
    batch = _batch()
    matrices = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]]).repeat(6, 1, 1)  # zoom out x2
    image, label = warp_batch(batch["image"], batch["label"], matrices, pad_value=0.25)
    assert float(image[:, :, :2].min()) == float(image[:, :, :2].max()) == 0.25
    assert int(label[:, :2].max()) == 0


def test_same_step_same_warp_other_step_other_warp():
    params = AugmentParams(probability=1.0, rotate_deg=20, scale=(0.9, 1.1), translate=0.05)
    g = lambda step: torch.Generator().manual_seed(step)  # noqa: E731
    assert torch.equal(random_affines(4, params, g(1)), random_affines(4, params, g(1)))
    assert not torch.equal(random_affines(4, params, g(1)), random_affines(4, params, g(2)))
    augment = SpatialAugment(params, seed=0)
    assert torch.equal(augment(_batch(), 5)["image"], augment(_batch(), 5)["image"])


def test_probability_leaves_some_samples_untouched():
    matrices = random_affines(200, AugmentParams(probability=0.5, rotate_deg=10), torch.Generator().manual_seed(0))
    identity = (matrices == torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])).all(dim=(1, 2))
    assert 60 < int(identity.sum()) < 140


def test_config_section_is_checked():
    config = config_from_dict({"augment": {"rotate_deg": 5, "scale": [0.9, 1.1]}})
    assert config.augment.params().scale == (0.9, 1.1)
    with pytest.raises(ValueError, match=r"augment\.scale"):
        config_from_dict({"augment": {"scale": [1.2, 0.9]}})
    with pytest.raises(ValueError, match="unknown config key"):
        config_from_dict({"augment": {"elastic": 3}})


def test_intensity_changes_images_only_within_unit_range_and_deterministically():
    from medsam_kit.engine.augment import IntensityParams

    batch = _batch()
    batch["image"] = batch["image"].clamp(0, 1)
    params = IntensityParams(probability=1.0)
    augment = SpatialAugment(AugmentParams(), intensity=params, seed=3)
    out = augment(batch, 5)
    assert torch.equal(out["label"], batch["label"])  # labels never change
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    changed = (out["image"] - batch["image"]).abs().flatten(1).mean(1)
    assert (changed > 0.01).all()  # every sample drawn (probability 1) changed
    assert torch.equal(augment(batch, 5)["image"], out["image"])  # same step, same draws
    assert not torch.equal(augment(batch, 6)["image"], out["image"])
    # a share of a distributed batch changes exactly as those rows of the whole batch
    share = augment({"image": batch["image"][2:4], "label": batch["label"][2:4]}, 5, start=2, global_size=6)
    torch.testing.assert_close(share["image"], out["image"][2:4])
    # probability 0 returns the batch untouched; the warps do not depend on the intensity stream
    assert SpatialAugment(AugmentParams(), intensity=IntensityParams())(batch, 5) is batch
    warp = AugmentParams(probability=1.0, rotate_deg=20)
    plain = SpatialAugment(warp, seed=3)(batch, 5)
    both = SpatialAugment(warp, seed=3, intensity=params)(batch, 5)
    assert torch.equal(plain["label"], both["label"])


def test_intensity_config_keys():
    config = config_from_dict({"augment": {"intensity": 0.5, "intensity_gamma": [0.8, 1.2]}})
    params = config.augment.intensity_params()
    assert params.probability == 0.5 and params.gamma_range == (0.8, 1.2)
    with pytest.raises(ValueError, match="intensity probability must be in"):
        config_from_dict({"augment": {"intensity": 1.5}})
