"""Pseudo-labels from the teacher with confidence masks, and the masked losses that learn from them.

* coarse head: pseudo-label = argmax of the teacher's softmax on the weak view; a pixel is
  confident when its maximum probability is ``>= threshold`` (UniMatch: 0.95).
* decoder: pseudo-mask = ``sigmoid(teacher logits) > 0.5``; confident when ``max(p, 1 - p) >=
  threshold`` (sure of the object *and* sure of the background).

Losses only count confident pixels. Cross-entropy / BCE are summed over confident pixels and
divided by *all* pixels (UniMatch's normalisation): when few pixels are confident, as early in
training, the unlabeled loss is small on its own instead of being a loud average over a handful of
pixels. Dice is MONAI's :class:`monai.losses.MaskedDiceLoss` (prediction and one-hot target both
zeroed outside the mask; the target is one-hot encoded *before* masking, because MONAI's
``to_onehot_y`` after masking would turn masked pixels into background targets), summed over the
whole batch per class (``batch=True``): with few confident pixels per item, the per-item Dice of a
class absent from an item's confident pixels is ``1 - eps / (sum p + eps)``, about 1 whatever the
prediction (a constant without gradient that would only inflate the logged loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss


def coarse_pseudo_labels(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pseudo-labels from coarse logits ``(B, K+1, H, W)``.

    Returns:
        ``(labels, confidence, mask)``: ``(B, H, W)`` int64 argmax, float32 maximum softmax
        probability, and bool ``confidence >= threshold``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence, confidence >= threshold


def decoder_pseudo_masks(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-masks from decoder logits ``(P, 1, H, W)`` (or ``(P, H, W)``).

    Returns:
        ``(targets, mask)``: ``(P, H, W)`` bool ``p > 0.5`` and bool ``max(p, 1 - p) >= threshold``.
    """
    p = torch.sigmoid(logits.float())
    if p.ndim == 4:
        p = p[:, 0]
    return p > 0.5, torch.maximum(p, 1 - p) >= threshold


class MaskedCoarseLoss(torch.nn.Module):
    """CE + Dice of coarse ``logits`` ``(B, K+1, H, W)`` against ``labels`` ``(B, H, W)`` on ``mask`` pixels."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.dice = MaskedDiceLoss(softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        weight = mask.float()
        ce = (F.cross_entropy(logits, labels.long(), reduction="none") * weight).sum() / weight.numel()
        target = F.one_hot(labels.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
        dice = self.dice(logits, target, mask=weight[:, None])
        return self.ce_weight * ce + self.dice_weight * dice


class MaskedMaskLoss(torch.nn.Module):
    """BCE + Dice of decoder ``logits`` ``(P, 1, H, W)`` against ``targets`` ``(P, H, W)`` on ``mask`` pixels."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        self.dice = MaskedDiceLoss(sigmoid=True, batch=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = targets.float()[:, None]
        weight = mask.float()[:, None]
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.numel()
        dice = self.dice(logits, target, mask=weight)
        return self.bce_weight * bce + self.dice_weight * dice
