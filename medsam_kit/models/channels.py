"""Input normalisation constants and the rule that turns an RGB patch embedding into a C-channel one.

SAM and SAM-2 were pretrained on RGB photographs normalised with the ImageNet mean / std (in
``[0, 1]`` intensity units; SAM-1 stores the same numbers times 255). Medical inputs have 1 channel
(CT, EM, one MRI sequence) or several (4 MRI modalities in BraTS). Initialising the patch embedding of
such a model randomly would throw away the one layer every pretrained feature depends on, so the
C-channel kernel is derived from the RGB one by :func:`adapt_patch_embedding`.

The rule ("grey equivalence"): fed the same value ``v`` in every channel, the C-channel model produces
exactly the patch-embedding activations the RGB model produces for the grey RGB image of value ``v``
(wherever the kernel does not overlap the zero padding; SAM-1's 16x16 stride-16 patches have no
padding, so there it holds everywhere). With RGB kernel ``W_c`` (``c`` in R, G, B), bias ``b``, RGB
normalisation ``(m_c, s_c)`` and target normalisation ``(m'_i, s'_i)`` for ``i = 1..C``::

    W'_i = (1 / C) * sum_c W_c * s'_i / s_c
    b'   = b + sum_{c, kernel taps} W_c * (mean_i(m'_i) - m_c) / s_c

When the target normalisation is the RGB one with equal values across channels this is the familiar
"mean over RGB, replicated per channel, scaled by 3 / C", which keeps activations at their
pretrained scale; the ``s'/s_c`` factors and the bias term fold the normalisation difference in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# ImageNet statistics in [0, 1] intensity units (SAM-1's pixel_mean / pixel_std divided by 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_normalization(in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel ``(pixel_mean, pixel_std)`` for a model with ``in_channels`` inputs in ``[0, 1]``.

    RGB models keep ImageNet's statistics (what the official predictors apply). Any other channel
    count gets the grey equivalent -- the mean of the three RGB values -- in every channel.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    grey_mean = sum(IMAGENET_MEAN) / 3
    grey_std = sum(IMAGENET_STD) / 3
    return [grey_mean] * in_channels, [grey_std] * in_channels


@torch.no_grad()
def adapt_patch_embedding(
    conv: nn.Conv2d,
    in_channels: int,
    rgb_mean: Sequence[float] = IMAGENET_MEAN,
    rgb_std: Sequence[float] = IMAGENET_STD,
    target_mean: Sequence[float] | None = None,
    target_std: Sequence[float] | None = None,
) -> nn.Conv2d:
    """Return a new ``in_channels``-input convolution derived from the RGB ``conv`` (module docstring rule).

    Args:
        conv: the pretrained patch embedding, weight ``(D, 3, kh, kw)``; left unchanged.
        in_channels: C, the number of input channels of the new convolution.
        rgb_mean, rgb_std: normalisation the RGB kernel was trained with (``[0, 1]`` units).
        target_mean, target_std: per-channel normalisation the new model applies (length C);
            defaults to :func:`default_normalization`.

    Returns:
        ``nn.Conv2d`` with weight ``(D, C, kh, kw)``, same kernel size / stride / padding / dtype /
        device, and a bias (the bias absorbs the mean difference even if ``conv`` had none).
    """
    if conv.in_channels != 3:
        raise ValueError(f"adapt_patch_embedding expects an RGB (3-channel) kernel, got {conv.in_channels} channels")
    default_mean, default_std = default_normalization(in_channels)
    target_mean = list(default_mean if target_mean is None else target_mean)
    target_std = list(default_std if target_std is None else target_std)
    if len(target_mean) != in_channels or len(target_std) != in_channels:
        raise ValueError(
            f"target normalisation needs {in_channels} values per statistic, got mean {target_mean} std {target_std}"
        )
    weight = conv.weight.double()  # (D, 3, kh, kw); float64 so the folded sums stay exact to float32
    rgb_std_t = torch.tensor(rgb_std, dtype=torch.float64, device=weight.device).view(1, 3, 1, 1)
    rgb_mean_t = torch.tensor(rgb_mean, dtype=torch.float64, device=weight.device).view(1, 3, 1, 1)
    per_unit = (weight / rgb_std_t).sum(dim=1, keepdim=True)  # (D, 1, kh, kw): response to grey value 1
    scale = torch.tensor(target_std, dtype=torch.float64, device=weight.device).view(1, in_channels, 1, 1)
    new_weight = per_unit * scale / in_channels  # (D, C, kh, kw)
    mean_target = sum(target_mean) / in_channels
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    bias = bias + (weight * (mean_target - rgb_mean_t) / rgb_std_t).sum(dim=(1, 2, 3))

    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    new.weight.copy_(new_weight.to(conv.weight.dtype))
    new.bias.copy_(bias.to(conv.weight.dtype))
    return new
