"""Batched spatial augmentation on the device: one random affine warp per sample, image and label alike.

Each sample of a ``(B, C, H, W)`` batch gets its own affine map (flips, a quarter turn, a small
rotation, isotropic scale, translation, composed into one ``2 x 3`` matrix) and the whole batch
is resampled with a single :func:`torch.nn.functional.grid_sample` call: bilinear for images,
nearest for labels, so the label stays a label map and lines up with the image exactly (flips
and quarter turns are exact permutations of the pixels). Pixels that come from outside the
sample take ``pad_value`` in the image (the model-input value of a preprocessed 0, as the
sampler pads) and background in the label.

Why not MONAI's ``RandAffined``: it draws one transform per call on one sample (a Python loop per
batch element on the CPU); here the batch is warped in one call on the training device, which the
semi-supervised views (weak / strong of a whole unlabeled batch) need as well.

Randomness comes from a generator seeded by ``(seed, step)``, so a resumed run draws the same
warps as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random affine map (all off = identity).

    Attributes:
        probability: chance that a sample is warped at all.
        flip: chance of a left-right flip and, independently, of an up-down flip.
        rot90: also turn by a random multiple of 90 degrees.
        rotate_deg: rotation drawn uniformly from ``[-rotate_deg, rotate_deg]``.
        scale: zoom factor range ``(lo, hi)`` (> 1 enlarges the content), drawn log-uniformly.
        translate: shift drawn uniformly from ``[-translate, translate]`` of the side, per axis.
    """

    probability: float = 0.0
    flip: float = 0.0
    rot90: bool = False
    rotate_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi:
            raise ValueError(f"augment scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        for name in ("probability", "flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment {name} must be in [0, 1], got {getattr(self, name)}")
        if self.translate < 0 or self.rotate_deg < 0:
            raise ValueError("augment translate and rotate_deg must be >= 0")

    @property
    def active(self) -> bool:
        return self.probability > 0 and (self.flip > 0 or self.rot90 or self.rotate_deg > 0
                                         or self.scale != (1.0, 1.0) or self.translate > 0)


def random_affines(batch: int, params: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """``(B, 2, 3)`` float32 matrices for :func:`torch.nn.functional.affine_grid` (output → input coordinates)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    angle = uniform(-params.rotate_deg, params.rotate_deg) * math.pi / 180
    if params.rot90:
        angle = angle + torch.randint(0, 4, (batch,), generator=generator) * (math.pi / 2)
    lo, hi = (math.log(float(v)) for v in params.scale)
    zoom = torch.exp(uniform(lo, hi))
    flip_x = torch.where(torch.rand(batch, generator=generator) < params.flip, -1.0, 1.0)
    flip_y = torch.where(torch.rand(batch, generator=generator) < params.flip, -1.0, 1.0)
    shift = uniform(-params.translate, params.translate), uniform(-params.translate, params.translate)
    warp = torch.rand(batch, generator=generator) < params.probability
    cos, sin = torch.cos(angle), torch.sin(angle)
    # sampling grid = R(angle) · diag(flip) / zoom · output + shift; normalised coordinates span [-1, 1]
    matrix = torch.stack([
        torch.stack([cos * flip_x / zoom, -sin * flip_y / zoom, 2 * shift[0]], dim=1),
        torch.stack([sin * flip_x / zoom, cos * flip_y / zoom, 2 * shift[1]], dim=1),
    ], dim=1)
    # quarter turns must be exact permutations: snap cos/sin of multiples of 90 degrees
    matrix[:, :, :2] = torch.where(matrix[:, :, :2].abs() < 1e-6, torch.zeros(()), matrix[:, :, :2])
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return torch.where(warp[:, None, None], matrix, identity)


def warp_batch(images: torch.Tensor, labels: torch.Tensor | None, matrices: torch.Tensor, pad_value: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample ``images`` ``(B, C, H, W)`` (bilinear) and ``labels`` ``(B, H, W)`` (nearest) with ``matrices``."""
    matrices = matrices.to(images.device, images.dtype)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    warped = F.grid_sample(images - pad_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped + pad_value
    if labels is None:
        return warped, None
    label = F.grid_sample(labels[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)
    return warped, label[:, 0].round().to(labels.dtype)


def inverse_affines(matrices: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` inverses of :func:`random_affines` matrices: input → output normalised coordinates."""
    linear, shift = matrices[:, :, :2].double(), matrices[:, :, 2:].double()
    inv = torch.linalg.inv(linear)
    return torch.cat([inv, -inv @ shift], dim=2).to(matrices.dtype)


def map_points(points: torch.Tensor, matrices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where pixel-index points ``(x, y)`` of the input land in the output of :func:`warp_batch`.

    Args:
        points: ``(B, N, 2)`` ``(x, y)`` pixel-index coordinates (pixel ``[r, c]`` has centre ``(c, r)``).
        matrices: the ``(B, 2, 3)`` matrices the batch was warped with.
        size: ``(H, W)`` of the images.

    Returns:
        ``(B, N, 2)`` float coordinates in the warped images (may lie outside them).
    """
    h, w = size
    scale = torch.tensor([w, h], dtype=torch.float64, device=points.device)
    # align_corners=False: pixel index x <-> normalised (2x + 1) / W - 1 (affine_grid / grid_sample convention)
    norm = (2 * points.double() + 1) / scale - 1
    inv = inverse_affines(matrices.double()).to(points.device)
    out = norm @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    return ((out + 1) * scale - 1) / 2


def map_boxes(boxes: torch.Tensor, matrices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Enclosing boxes, in the warped images, of the input boxes mapped through the warps (not clipped).

    Args:
        boxes: ``(B, 4)`` ``(x0, y0, x1, y1)`` inclusive-exclusive (the box's pixel edges, as
            :class:`medsam_kit.prompts.BoxPrompt`).
        matrices: the ``(B, 2, 3)`` matrices the batch was warped with.
        size: ``(H, W)`` of the images.

    Returns:
        ``(B, 4)`` float64 inclusive-exclusive boxes: the four mapped corners' bounding box (exact for
        flips and quarter turns; for a rotation it encloses the rotated box).
    """
    x0, y0, x1, y1 = boxes.double().unbind(1)
    corners = torch.stack([torch.stack(c, dim=1) for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], dim=1)
    # Edges sit half a pixel before / after pixel centres: map them as points at x - 0.5.
    mapped = map_points(corners - 0.5, matrices, size) + 0.5
    return torch.cat([mapped.amin(dim=1), mapped.amax(dim=1)], dim=1)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of the last two axes with one ``sigma`` (pixels, ``(B,)``) per sample.

    ``sigma <= 0`` leaves a sample unchanged. Edges are reflected (no dark frame). The kernel radius is
    ``3 * max_sigma`` (default: the largest ``sigma`` given); a process holding one share of a distributed
    batch passes the whole batch's largest sigma, so its samples are blurred exactly as in one process.
    """
    batch = images.shape[0]
    flat = images.reshape(1, -1, *images.shape[-2:])  # every (sample, channel, slice) plane is a group
    planes = flat.shape[1] // batch
    largest = float(sigma.max()) if max_sigma is None and len(sigma) else float(max_sigma or 0.0)
    radius = max(1, math.ceil(3 * largest))
    radius = min(radius, (images.shape[-1] - 1) // 2) or 1
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.float().clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (x[None] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # sigma -> 0: a delta (the pixel itself)
    kernel = kernel.repeat_interleave(planes, dim=0).to(images.device, images.dtype)
    groups = kernel.shape[0]
    out = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(groups, 1, 1, -1), groups=groups)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(groups, 1, -1, 1), groups=groups)
    return out.reshape(images.shape)


@dataclass(frozen=True)
class IntensityParams:
    """Random intensity changes of labeled samples (image only; nnU-Net-style, on model-input values in [0, 1]).

    With one or a few labeled volumes a model learns their exact contrast, noise and shading; these draws
    make it meet other scanners' and patients' (a patient's bright-blood / myocardium ratio, coil shading,
    SNR). Each sample is changed with ``probability``; each change is drawn independently.

    Attributes:
        probability: chance that a sample's intensities are changed at all (0: off).
        contrast: factor from ``[1 - c, 1 + c]`` about the sample's mean.
        brightness: additive shift from ``[-b, b]``.
        gamma_range: ``x ** g`` with ``g`` log-uniform in ``(lo, hi)``.
        noise_std: Gaussian noise, standard deviation uniform in ``[0, noise_std]``.
        blur_sigma: Gaussian blur sigma (pixels) uniform in ``[0, blur_sigma]``, for half the changed samples.
        bias: amplitude of a smooth multiplicative field ``exp(a · plane)`` (a random linear ramp across the
            image, as a surface coil's shading), ``a`` uniform in ``[-bias, bias]``.
    """

    probability: float = 0.0
    contrast: float = 0.3
    brightness: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.05
    blur_sigma: float = 1.0
    bias: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"augment intensity probability must be in [0, 1], got {self.probability}")
        lo, hi = (float(v) for v in self.gamma_range)
        if not 0 < lo <= hi:
            raise ValueError(f"augment gamma_range must be (lo, hi) with 0 < lo <= hi, got {self.gamma_range}")
        if not 0 <= self.contrast < 1 or min(self.brightness, self.noise_std, self.blur_sigma, self.bias) < 0:
            raise ValueError("augment contrast must be in [0, 1) and brightness / noise_std / blur_sigma / bias >= 0")


def intensity_augment(images: torch.Tensor, params: IntensityParams, generator: torch.Generator,
                      total: int | None = None, offset: int = 0) -> torch.Tensor:
    """Change the intensities of each sample of ``images`` ``(B, C, H, W)`` in ``[0, 1]`` (:class:`IntensityParams`).

    Draws are made for ``total`` samples (default ``B``) and rows ``offset ..`` applied, so a share of a
    distributed batch changes exactly as in one process. The result is clipped to ``[0, 1]``.
    """
    batch = images.shape[0]
    n = batch if total is None else int(total)

    def uniform(lo: float, hi: float) -> torch.Tensor:  # all n samples' draws
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    def mine(values: torch.Tensor) -> torch.Tensor:  # this share's rows, shaped to broadcast over a sample
        return values[offset:offset + batch].to(images.device, torch.float32).view(-1, *([1] * (images.ndim - 1)))

    changed = uniform(0.0, 1.0) < params.probability
    contrast = torch.where(changed, uniform(1 - params.contrast, 1 + params.contrast), torch.ones(()))
    shift = torch.where(changed, uniform(-params.brightness, params.brightness), torch.zeros(()))
    lo, hi = (math.log(float(v)) for v in params.gamma_range)
    gamma = torch.where(changed, torch.exp(uniform(lo, hi)), torch.ones(()))
    noise = torch.where(changed, uniform(0.0, params.noise_std), torch.zeros(()))
    sigma = torch.where(changed & (uniform(0.0, 1.0) < 0.5), uniform(0.0, params.blur_sigma), torch.zeros(()))
    angle = uniform(0.0, 2 * math.pi)
    amplitude = torch.where(changed, uniform(-params.bias, params.bias), torch.zeros(()))
    noise_field = torch.randn((n, *images.shape[1:]), generator=generator)[offset:offset + batch]
    if not bool(changed[offset:offset + batch].any()):
        return images
    x = images.float()
    h, w = x.shape[-2:]
    yy = torch.linspace(-1, 1, h, device=x.device)[:, None]
    xx = torch.linspace(-1, 1, w, device=x.device)[None, :]
    ramp = mine(torch.cos(angle)) * xx + mine(torch.sin(angle)) * yy  # a coil-like shading ramp, (B, 1, H, W)
    x = x * torch.exp(mine(amplitude) * ramp)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    x = ((x - mean) * mine(contrast) + mean + mine(shift)).clamp(0, 1)
    x = x.clamp_min(1e-8).pow(mine(gamma))
    if bool((sigma[offset:offset + batch] > 0).any()):
        x = gaussian_blur(x, sigma[offset:offset + batch], max_sigma=float(sigma.max()))
    x = x + mine(noise) * noise_field.to(x.device)
    out = x.clamp(0, 1).to(images.dtype)
    return torch.where(mine(changed) > 0, out, images)


_INTENSITY_STREAM = 0x1A7E  # the intensity draws' own random stream (never one of the warps' seeds)


class SpatialAugment:
    """Callable ``(batch, step) -> batch`` warping ``batch["image"]`` and ``batch["label"]`` together, then
    (with ``intensity``) changing the image's intensities (:func:`intensity_augment`).

    Args:
        params: the ranges.
        pad_value: image value for pixels from outside the sample.
        seed: base seed; step ``t`` uses a generator seeded by ``(seed, t)``.
        intensity: labeled-sample intensity changes (default off).
    """

    def __init__(self, params: AugmentParams, pad_value: float = 0.0, seed: int = 0,
                 intensity: IntensityParams | None = None) -> None:
        self.params = params
        self.pad_value = float(pad_value)
        self.seed = int(seed)
        self.intensity = intensity or IntensityParams()

    def __call__(self, batch: dict, step: int, start: int = 0, global_size: int | None = None) -> dict:
        """Warp ``batch`` as rows ``start ..`` of a micro-batch of ``global_size`` samples (default: the batch).

        The warps are drawn for the whole micro-batch and the batch's rows applied, so a process
        holding one share of a distributed batch warps its samples exactly as a single process would.
        """
        out = batch
        rows = batch["image"].shape[0]
        if self.params.active:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
            matrices = random_affines(global_size or rows, self.params, generator)[start:start + rows]
            image, label = warp_batch(batch["image"], batch.get("label"), matrices, self.pad_value)
            out = dict(batch, image=image)
            if label is not None:
                out["label"] = label
        if self.intensity.probability > 0:  # its own stream: turning it on leaves the warps as they were
            state = np.random.SeedSequence([self.seed, int(step), _INTENSITY_STREAM]).generate_state(1, np.uint64)
            generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
            out = dict(out, image=intensity_augment(out["image"], self.intensity, generator, global_size or rows,
                                                    start))
        return out
