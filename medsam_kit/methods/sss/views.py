"""Weak and strong views of an unlabeled batch, batched on the device (SSS / UniMatch).

* weak view ``w = A_w(u)``: the sampler's random S x S crop of the volume, then one random affine
  warp per sample (:mod:`medsam_kit.engine.augment`: flips, quarter turns, rotation, zoom, shift);
  the ``(B, 2, 3)`` matrices come back with it so prompts can be mapped into the view.
* strong views ``s = A_s(w)``: intensity only, so they share the weak view's geometry and the
  teacher's pseudo-labels on ``w`` line up with them pixel for pixel: brightness / contrast jitter,
  gamma, Gaussian blur, and for multi-channel inputs a random "grayscale" (every channel replaced
  by the channel mean). Two independent draws give ``s1`` and ``s2``.
* CutMix between samples of the batch: per sample, with probability ``cutmix``, a random box is
  pasted from another sample. :func:`cutmix_boxes` draws the boxes and partners once;
  :func:`apply_cutmix` applies the *same* boxes and partners to images, pseudo-labels and
  confidence masks.

Shapes: images are ``(B, C, S, S)`` (2D slices, also ``C * k`` stacked slices of a 2.5D stack) or
``(B, C, k, S, S)`` (2.5D stacks, channels first). Warps, blur and CutMix act on the last two axes,
the same for every channel and slice of a sample; jitter and gamma are per sample; "grayscale"
averages axis 1 (channels; of a ``(B, C * k, S, S)`` input that mixes slices too, so use the 5D
layout for multi-channel stacks). Intensities are model inputs in ``[0, 1]`` and stay there.

Randomness: every draw comes from a CPU ``torch.Generator`` (:func:`step_generator`, seeded by
``(seed, step, stream)``), so the views of a step are the same after a resume. Per-sample draws
are made for ``total`` samples and the ``offset`` .. ``offset + B`` share is used, so a rank of a
distributed run holding a share of the global batch draws what one process would draw for it
(CutMix partners are the exception: a sample can only be pasted from the rank's own share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medsam_kit.engine.augment import AugmentParams, gaussian_blur, random_affines, warp_batch

#: Generator streams of one step (independent draws for each view).
WEAK, STRONG1, STRONG2, CUTMIX1, CUTMIX2, PROMPTS = range(6)


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """CPU generator seeded by ``(seed, step, stream)`` (``numpy.random.SeedSequence`` mixing)."""
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


@dataclass(frozen=True)
class StrongParams:
    """Strong (intensity) augmentation and CutMix; defaults follow UniMatch, milder for grey-level scans.

    Attributes:
        jitter: chance of the brightness / contrast jitter (UniMatch: colour jitter with p 0.8).
        brightness: intensity factor drawn from ``[1 - b, 1 + b]``.
        contrast: factor ``c`` from ``[1 - c, 1 + c]`` about the sample's mean (``(x - m) * c + m``).
        gamma: chance of a gamma change ``x ** g``, ``g`` log-uniform in ``gamma_range``.
        gamma_range: ``(lo, hi)``.
        blur: chance of a Gaussian blur (UniMatch: 0.5), sigma in pixels from ``blur_sigma``.
        blur_sigma: ``(lo, hi)``.
        grayscale: chance that a multi-channel sample becomes its channel mean (UniMatch: 0.2).
        cutmix: chance that a sample gets a box pasted from another sample (UniMatch: 0.5).
        cutmix_area: box area as a share of the image, ``(lo, hi)`` (UniMatch: 0.02 .. 0.4).
        cutmix_ratio: box aspect ratio range ``(lo, hi)`` (UniMatch: 0.3 .. 1/0.3), log-uniform.
    """

    jitter: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    grayscale: float = 0.2
    cutmix: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)

    def __post_init__(self) -> None:
        for name in ("jitter", "gamma", "blur", "grayscale", "cutmix"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"strong augmentation probability {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("gamma_range", "blur_sigma", "cutmix_area", "cutmix_ratio"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0 < lo <= hi:
                raise ValueError(f"strong augmentation {name} must be (lo, hi) with 0 < lo <= hi, got "
                                 f"{getattr(self, name)}")
            object.__setattr__(self, name, (lo, hi))
        if self.cutmix_area[1] > 1:
            raise ValueError(f"cutmix_area is a share of the image, at most 1; got {self.cutmix_area}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError(f"brightness / contrast must be in [0, 1), got {self.brightness} / {self.contrast}")


def _check(images: torch.Tensor) -> None:
    if images.ndim not in (4, 5) or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"views need (B, C, S, S) or (B, C, k, S, S) images, got {tuple(images.shape)}")


def _draw(total: int | None, batch: int, offset: int, fn) -> torch.Tensor:
    """``fn(n)`` for ``n = total`` samples (default ``batch``), then this share ``[offset, offset + batch)``."""
    n = batch if total is None else int(total)
    if not 0 <= offset <= n - batch:
        raise ValueError(f"sample share [{offset}, {offset + batch}) is outside the {n} samples drawn")
    return fn(n)[offset:offset + batch]


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values shaped to broadcast over ``like`` ``(B, ...)``, on its device and dtype."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def weak_view(images: torch.Tensor, params: AugmentParams, generator: torch.Generator, pad_value: float = 0.0,
              total: int | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine warp of each sample (module docstring).

    Returns:
        ``(weak, matrices)``: the warped images (same shape as ``images``) and the ``(B, 2, 3)``
        float32 matrices (CPU) for :func:`medsam_kit.engine.augment.map_boxes`.
    """
    _check(images)
    batch = images.shape[0]
    matrices = _draw(total, batch, offset, lambda n: random_affines(n, params, generator))
    flat = images.reshape(batch, -1, *images.shape[-2:])  # (B, C, k, S, S) -> (B, C*k, S, S): one warp per sample
    warped, _ = warp_batch(flat, None, matrices, pad_value)
    return warped.reshape(images.shape), matrices


def strong_view(images: torch.Tensor, params: StrongParams, generator: torch.Generator,
                total: int | None = None, offset: int = 0) -> torch.Tensor:
    """Intensity augmentation of each sample (module docstring); same shape, values in ``[0, 1]``.

    Order: brightness, contrast, gamma, grayscale, blur; each applied to a sample with its probability.
    """
    _check(images)
    batch = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return _draw(total, batch, offset, lambda n: lo + (hi - lo) * torch.rand(n, generator=generator))

    def chance(p: float) -> torch.Tensor:
        return uniform(0.0, 1.0) < p

    x = images.float()
    jitter = chance(params.jitter)
    bright = torch.where(jitter, uniform(1 - params.brightness, 1 + params.brightness), torch.ones(()))
    contrast = torch.where(jitter, uniform(1 - params.contrast, 1 + params.contrast), torch.ones(()))
    x = (x * _per_sample(bright, x)).clamp(0, 1)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    x = ((x - mean) * _per_sample(contrast, x) + mean).clamp(0, 1)
    lo, hi = (math.log(v) for v in params.gamma_range)
    gamma = torch.where(chance(params.gamma), torch.exp(uniform(lo, hi)), torch.ones(()))
    x = x.clamp_min(1e-8).pow(_per_sample(gamma, x)) * (x > 0)  # 0 stays 0 (padding, background)
    gray = chance(params.grayscale) & (x.shape[1] > 1)
    x = torch.where(_per_sample(gray, x) > 0, x.mean(dim=1, keepdim=True).expand_as(x), x)
    # the whole batch's blur draws (same stream as chance / uniform): the kernel radius follows the largest
    # sigma of the whole batch, so a share of a distributed batch is blurred exactly as in one process
    n = batch if total is None else int(total)
    blurred = torch.rand(n, generator=generator) < params.blur
    lo, hi = params.blur_sigma
    sigmas = torch.where(blurred, lo + (hi - lo) * torch.rand(n, generator=generator), torch.zeros(()))
    sigma = sigmas[offset:offset + batch]
    if bool((sigma > 0).any()):
        x = gaussian_blur(x, sigma, max_sigma=float(sigmas.max()))
    return x.clamp(0, 1).to(images.dtype)


def cutmix_boxes(batch: int, size: tuple[int, int], params: StrongParams, generator: torch.Generator,
                 total: int | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix boxes and partners for a batch (module docstring).

    Returns:
        ``(region, partner)``: ``region`` ``(B, H, W)`` bool (CPU), True where sample ``b`` takes the
        pixels of sample ``partner[b]`` (all False for a sample without CutMix); ``partner`` ``(B,)``
        int64, never ``b`` itself when the batch has more than one sample (a cyclic shift by a random
        non-zero amount).
    """
    h, w = size
    draw = lambda fn: _draw(total, batch, offset, fn)  # noqa: E731 - short alias for the per-sample draws
    mixed = draw(lambda n: torch.rand(n, generator=generator)) < params.cutmix
    area = draw(lambda n: params.cutmix_area[0] + (params.cutmix_area[1] - params.cutmix_area[0])
                * torch.rand(n, generator=generator)) * h * w
    lo, hi = (math.log(v) for v in params.cutmix_ratio)
    ratio = torch.exp(draw(lambda n: lo + (hi - lo) * torch.rand(n, generator=generator)))
    bh = (area * ratio).sqrt().round().clamp(1, h)
    bw = (area / ratio).sqrt().round().clamp(1, w)
    y0 = (draw(lambda n: torch.rand(n, generator=generator)) * (h - bh + 1)).floor()
    x0 = (draw(lambda n: torch.rand(n, generator=generator)) * (w - bw + 1)).floor()
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    region = ((rows >= y0[:, None, None]) & (rows < (y0 + bh)[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < (x0 + bw)[:, None, None]) & mixed[:, None, None])
    shift = int(torch.randint(1, batch, (1,), generator=generator)) if batch > 1 else 0
    partner = (torch.arange(batch) + shift) % batch
    return region, partner


def apply_cutmix(values: torch.Tensor, region: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B, ..., H, W)`` with ``region`` of sample ``b`` taken from sample ``partner[b]``.

    The same ``(region, partner)`` mixes images, pseudo-labels and confidence masks consistently.
    """
    if values.shape[0] != region.shape[0] or tuple(values.shape[-2:]) != tuple(region.shape[-2:]):
        raise ValueError(f"CutMix region {tuple(region.shape)} does not fit values {tuple(values.shape)} "
                         "(expected (B, ..., H, W) with the same B, H, W)")
    mask = region.to(values.device).view(region.shape[0], *([1] * (values.ndim - 3)), *region.shape[-2:])
    return torch.where(mask, values[partner.to(values.device)], values)
