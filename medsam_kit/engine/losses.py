"""Segmentation losses: multi-class Dice + CE (coarse head), binary BCE + Dice (decoder masks).

Both are MONAI's :class:`monai.losses.DiceCELoss` with the settings spelled out here, so the
formulas are the library's (soft Dice with smoothing 1e-5, CE / BCE averaged over pixels):

* coarse head: softmax over ``K + 1`` channels, one-hot target, Dice over all channels including
  background (stable when a slice has no foreground), plus cross-entropy.
* decoder: one sigmoid channel per prompt; MONAI switches to binary cross-entropy for a single
  channel, Dice per item (``batch=False``), so a small structure counts as much as a large one.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


class CoarseLoss(torch.nn.Module):
    """Dice + CE for ``logits`` ``(B, K+1, H, W)`` against integer ``labels`` ``(B, H, W)`` in ``0..K``."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, batch_dice: bool = False) -> None:
        super().__init__()
        # batch_dice: one Dice per class over the whole micro-batch (nnU-Net's "batch dice") instead of one per
        # slice. Per slice, a class absent from a slice scores Dice 0 for any predicted mass however small, a
        # pull towards never predicting small or sometimes-absent classes.
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice_weight, lambda_ce=ce_weight,
                               batch=batch_dice)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), labels.unsqueeze(1).long())


class MaskLoss(torch.nn.Module):
    """BCE + Dice for mask ``logits`` ``(P, 1, H, W)`` against binary ``targets`` ``(P, H, W)``."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.loss = DiceCELoss(sigmoid=True, lambda_dice=dice_weight, lambda_ce=bce_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), targets.unsqueeze(1).float())
