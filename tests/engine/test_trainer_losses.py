"""Loss values on constructed inputs (hand-computed references)."""

from __future__ import annotations

import math

import pytest
import torch

from medsam_kit.engine.losses import CoarseLoss, MaskLoss

SMOOTH = 1e-5  # MONAI's default smoothing


def test_coarse_loss_uniform_logits():
    labels = torch.zeros(1, 4, 4, dtype=torch.int64)
    labels[0, :2] = 1  # half the pixels foreground
    loss = CoarseLoss()(torch.zeros(1, 2, 4, 4), labels)
    # CE = ln 2; Dice per channel: 2 * (0.5 * 8) / (0.5 * 16 + 8) = 0.5 -> loss 0.5 (mean over 2 channels).
    dice = 1 - (2 * 4 + SMOOTH) / (8 + 8 + SMOOTH)
    assert loss.item() == pytest.approx(math.log(2) + dice, abs=1e-5)


def test_coarse_loss_near_zero_when_perfect():
    labels = torch.randint(0, 4, (2, 8, 8))
    logits = 50.0 * torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert CoarseLoss()(logits, labels).item() == pytest.approx(0.0, abs=1e-4)
    assert CoarseLoss(dice_weight=0.0)(torch.zeros(2, 4, 8, 8), labels).item() == pytest.approx(math.log(4), abs=1e-5)


def test_mask_loss_values():
    targets = torch.zeros(2, 4, 4)
    targets[0, :1] = 1  # 4 foreground pixels on item 0, item 1 empty
    loss = MaskLoss()(torch.zeros(2, 1, 4, 4), targets)
    # BCE of logit 0 = ln 2 everywhere; Dice per item: item 0 1 - (2*2)/(8+4), item 1 1 - eps/(8+eps).
    dice0 = 1 - (2 * 2 + SMOOTH) / (8 + 4 + SMOOTH)
    dice1 = 1 - SMOOTH / (8 + SMOOTH)
    assert loss.item() == pytest.approx(math.log(2) + (dice0 + dice1) / 2, abs=1e-5)
    perfect = MaskLoss()(40.0 * (2 * targets[:1] - 1).unsqueeze(1), targets[:1])
    assert perfect.item() == pytest.approx(0.0, abs=1e-4)
