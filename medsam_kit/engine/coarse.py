"""Coarse-head logits of whole volumes, and how trustworthy their confident pixels are.

* :func:`coarse_logit_chunks`: the prompt-free head over every slice of a volume (S x S sliding
  windows), a few slices at a time: what validation, the SSS teacher's PCSW labelling and the
  calibration below all run.
* :class:`PseudoLabelCalibration`: coverage and precision of the confident pixels per threshold,
  against known labels (what a semi-supervised method's confidence threshold should be read from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from monai.inferers import sliding_window_inference


@torch.no_grad()
def coarse_logit_chunks(model, image: torch.Tensor, batch_size: int = 8, pad_value: float = 0.0,
                        autocast: Callable | None = None) -> Iterator[torch.Tensor]:
    """Coarse-head logits of a volume, ``batch_size`` slices at a time: ``(z, K + 1, Y, X)`` float32 on the device.

    Args:
        model: a ``SegmenterModel`` (e.g. the EMA teacher), used as is (the caller sets eval mode).
        image: ``(C, Z, Y, X)`` model-input intensities in ``[0, 1]`` (``to_unit`` applied).
        batch_size: slices per forward pass.
        pad_value: model-input value outside the slice (windows overhanging a slice smaller than S).
        autocast: optional context-manager factory (mixed precision on CUDA).

    Slices of any size are covered by S x S windows (MONAI sliding window, overlap 0.25), so the
    logits are at the input's pixel spacing. Chunks, not the whole
    volume: K + 1 float maps of a large CT would not fit where its class indices do.
    """
    size = model.image_size
    device = next(model.parameters()).device
    slices = image.permute(1, 0, 2, 3)  # (Z, C, Y, X): slices are the batch
    for z0 in range(0, slices.shape[0], batch_size):
        chunk = slices[z0:z0 + batch_size].to(device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = sliding_window_inference(chunk, (size, size), batch_size,
                                              lambda t: model.coarse_logits(model.encode(t)),
                                              overlap=0.25, cval=pad_value)
        yield logits.float()


class PseudoLabelCalibration:
    """How right the coarse pseudo-labels are at each confidence threshold, from labeled data.

    The threshold decides what the student learns: too high and (almost) nothing is confident, too
    low and wrong labels get in. UniMatch's 0.95 assumes a pretrained, sharp network; a model trained
    from scratch on a few volumes is right but soft (on ACDC phantoms after 800 steps: 3-39 % of the
    pixels at 0.95 or more, 86-93 % at 0.8, and 97.5-99.5 % of those right). This counts,
    on volumes whose labels are known (validation cases, or a phantom's hidden labels), for every
    threshold: the share of pixels kept (*coverage*), the share of kept pixels whose pseudo-label is
    right (*precision*), and both per class, so the threshold can be read off a run instead of
    guessed. Counts go into a (predicted x true x confidence-bin) histogram, so any thresholds can
    be asked for afterwards (to ``1 / bins``).

    Args:
        num_classes: channels of the coarse logits (background included).
        bins: confidence bins over ``[0, 1]``.
    """

    def __init__(self, num_classes: int, bins: int = 1000) -> None:
        self.num_classes, self.bins = int(num_classes), int(bins)
        self.counts = torch.zeros(self.num_classes, self.num_classes, self.bins, dtype=torch.float64)

    def add(self, logits: torch.Tensor, truth: torch.Tensor) -> None:
        """Count ``logits`` ``(B, K + 1, H, W)`` against true class indices ``truth`` ``(B, H, W)``."""
        confidence, labels = torch.softmax(logits.float(), dim=1).max(dim=1)
        index = (confidence.clamp(0, 1) * self.bins).long().clamp(max=self.bins - 1)
        k, n = self.num_classes, self.bins
        flat = (labels * k + truth.to(labels.device).long()) * n + index
        self.counts += torch.bincount(flat.reshape(-1), minlength=k * k * n).view(k, k, n).double().cpu()

    def summary(self, thresholds: Sequence[float]) -> dict[str, dict]:
        """``{f"{t:g}": {"coverage", "precision", "classes": {c: {"coverage", "precision"}}}}``.

        Per class ``c``: *coverage* = share of the true-``c`` pixels that are kept *and* labeled
        ``c``; *precision* = share of the kept pixels labeled ``c`` that are ``c`` (None: none kept).
        """
        out = {}
        truth_totals = self.counts.sum(dim=(0, 2))
        for t in thresholds:
            kept = self.counts[:, :, int(round(float(t) * self.bins)):].sum(-1)  # predicted x true
            right = kept.diagonal()
            per_class = {}
            for c in range(self.num_classes):
                labeled_c = float(kept[c].sum())
                per_class[c] = {"coverage": float(right[c] / truth_totals[c]) if truth_totals[c] else None,
                                "precision": float(right[c]) / labeled_c if labeled_c else None}
            total = float(self.counts.sum())
            out[f"{float(t):g}"] = {"coverage": float(kept.sum()) / total if total else None,
                                    "precision": float(right.sum() / kept.sum()) if kept.sum() else None,
                                    "classes": per_class}
        return out
