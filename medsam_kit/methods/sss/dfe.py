"""DFE — Discriminative Feature Enhancement (SSS): fuse weak- and strong-view encoder features.

For the encoder features of the weak view ``A`` and of a strong view ``B`` at every scale the
decoder reads (SAM-2: the stride-16 embedding and the two high-resolution maps at strides 4 and 8;
SAM-1: the one stride-16 map), per scale ``i``:

1. ``a = conv3(P_i(A_i))``, ``b = conv3(P_i(B_i))``: a 1x1 projection ``P_i`` to a common width
   ``d`` then a 3x3 convolution shared by every scale and both views;
2. ``s = cos(GAP(a), GAP(b))`` per sample (global average pooling over the map), ``w = sigmoid(s)``;
3. ``F = w * MLP(a) + (1 - w) * MLP(b) + (1 - s) * (b - a)``: the similarity-weighted fusion plus
   the dissimilarity term, with ``MLP`` a per-pixel two-layer perceptron (1x1 convolutions
   ``d -> 2d -> d``, GELU) shared by the scales;
4. the enhanced map is ``B_i + Q_i(F)``, with ``Q_i`` a 1x1 projection back to the scale's width.

Why the residual and the zero start: ``Q_i`` is zero-initialised, so at the start DFE passes the
strong features through unchanged and the (pretrained) decoder sees what it was trained on; the
paper's fused ``F`` replaces ``B``, which with a randomly initialised fusion would feed the decoder
noise until DFE has learnt. The weights ``w`` and ``1 - s`` are the paper's.

DFE is a training-time module of the SSS method (no weak / strong pair exists at inference): its
parameters live in the method, are optimised with the model (the trainer adds
``method.parameters()`` to the optimizer) and are saved in ``method.state_dict()``, so the model
checkpoint keeps its official layout and loads with :func:`medsam_kit.models.load_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsam_kit.models.segmenter_model import Features


def feature_widths(features: Features) -> list[int]:
    """Channel widths of ``[image_embed, *high_res]`` (the order DFE uses)."""
    return [features.image_embed.shape[1], *(t.shape[1] for t in features.high_res)]


class DFE(nn.Module):
    """Discriminative feature enhancement over every scale of :class:`Features` (module docstring).

    Args:
        widths: channel widths of ``[image_embed, *high_res]`` (:func:`feature_widths`).
        width: common width ``d`` (SSS: 256, SAM-2's decoder width).
        mlp_ratio: hidden width of the per-pixel MLP is ``mlp_ratio * d``.
    """

    def __init__(self, widths: Sequence[int], width: int = 256, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if not widths or min(widths) < 1 or width < 1:
            raise ValueError(f"DFE needs positive widths per scale and a common width, got {widths} / {width}")
        self.widths = [int(c) for c in widths]
        hidden = max(1, round(mlp_ratio * width))
        self.project_in = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in self.widths)
        self.shared = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(width, hidden, kernel_size=1), nn.GELU(), nn.Conv2d(hidden, width, 1))
        self.project_out = nn.ModuleList(nn.Conv2d(width, c, kernel_size=1) for c in self.widths)
        for conv in self.project_out:  # start as the identity on B (module docstring)
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.last_similarity: torch.Tensor | None = None  # (B, scales) of the last call, for logs and tests

    def _scale(self, i: int, weak: torch.Tensor, strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Enhanced map of scale ``i`` and the per-sample similarity ``s`` ``(B,)``."""
        batch = strong.shape[0]
        both = self.shared(self.project_in[i](torch.cat([weak, strong]).to(self.shared.weight.dtype)))
        a, b = both[:batch], both[batch:]
        sim = F.cosine_similarity(a.mean(dim=(2, 3)), b.mean(dim=(2, 3)), dim=1, eps=1e-6)
        s = sim.view(-1, 1, 1, 1)
        w = torch.sigmoid(s)
        mlp = self.mlp(both)
        fused = w * mlp[:batch] + (1 - w) * mlp[batch:] + (1 - s) * (b - a)
        return strong + self.project_out[i](fused).to(strong.dtype), sim

    def forward(self, weak: Features, strong: Features) -> Features:
        """Enhanced strong-view :class:`Features` (same shapes as ``strong``) from a (weak, strong) pair."""
        weak_maps = [weak.image_embed, *weak.high_res]
        strong_maps = [strong.image_embed, *strong.high_res]
        shapes = [tuple(t.shape) for t in strong_maps]
        if [tuple(t.shape) for t in weak_maps] != shapes:
            raise ValueError(f"DFE needs weak and strong features of the same shapes, got "
                             f"{[tuple(t.shape) for t in weak_maps]} and {shapes}")
        if [s[1] for s in shapes] != self.widths:
            raise ValueError(f"DFE was built for feature widths {self.widths}, got {[s[1] for s in shapes]}")
        out, sims = [], []
        for i, (a, b) in enumerate(zip(weak_maps, strong_maps, strict=True)):
            enhanced, sim = self._scale(i, a, b)
            out.append(enhanced)
            sims.append(sim.detach())
        self.last_similarity = torch.stack(sims, dim=1)
        return Features(out[0], tuple(out[1:]))
