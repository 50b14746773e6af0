"""The coarse semantic head: multi-class logits from SAM encoder features, without any prompt.

Used for the automatic mode (its masks seed PCSW prompts) and later for semi-supervision. It is
deliberately light: one 3x3 convolution at stride 16 and two 2x transposed convolutions to stride
4, mirroring the upscaling path of SAM's own mask decoder; for SAM-2 the decoder's projected
high-resolution maps (stride 8 and 4) are added on the way up, as SAM-2's decoder does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm: independent of batch size (training batches of a few slices are common).
    return nn.GroupNorm(min(8, channels), channels)


class CoarseHead(nn.Module):
    """Prompt-free multi-class head.

    Args:
        embed_dim: D, channels of the stride-16 image embedding (the decoder width, 256 officially).
        num_classes: K foreground classes; the head outputs K + 1 channels, channel 0 = background.
        use_high_res: add SAM-2's high-resolution maps ``(B, D/4, S/8, S/8)`` and
            ``(B, D/8, S/4, S/4)`` after each upsampling step.
    """

    def __init__(self, embed_dim: int, num_classes: int, use_high_res: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (foreground classes, background excluded), got {num_classes}")
        if embed_dim % 8:
            raise ValueError(f"coarse head needs an embedding width divisible by 8, got {embed_dim}")
        d = embed_dim
        self.use_high_res = use_high_res
        self.stem = nn.Sequential(nn.Conv2d(d, d // 2, 3, padding=1), _norm(d // 2), nn.GELU())
        self.up1 = nn.ConvTranspose2d(d // 2, d // 4, kernel_size=2, stride=2)
        self.norm1 = _norm(d // 4)
        self.up2 = nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2)
        self.norm2 = _norm(d // 8)
        self.act = nn.GELU()
        self.classifier = nn.Conv2d(d // 8, num_classes + 1, kernel_size=1)

    def forward(self, image_embed: torch.Tensor, high_res: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Logits ``(B, K + 1, 4h, 4w)`` (stride 4) from ``image_embed`` ``(B, D, h, w)`` (stride 16).

        ``high_res`` is ``(s4 (B, D/8, 4h, 4w), s8 (B, D/4, 2h, 2w))`` as SAM-2's encoder returns it;
        ignored unless ``use_high_res``.
        """
        x = self.stem(image_embed)
        x = self.up1(x)
        if self.use_high_res and high_res:
            x = x + high_res[1]
        x = self.act(self.norm1(x))
        x = self.up2(x)
        if self.use_high_res and high_res:
            x = x + high_res[0]
        x = self.act(self.norm2(x))
        return self.classifier(x)
