"""2D prompted prediction on slices of any size: resize/pad to the model input, encode, decode, map back.

Coordinates (see :mod:`medsam_kit.prompts.types`): a slice is ``(C, Y, X)``; boxes are
``(x0, y0, x1, y1)`` end-exclusive on the pixel-edge grid, points ``(x, y)`` pixel-index
(centre of ``slice[r, c]`` is ``(c, r)``). The model takes a square ``S x S`` input and boxes as
inclusive corner pixels (:mod:`medsam_kit.models.segmenter_model`).

:class:`ResizeTransform` has two modes:

* ``"longest"`` (SAM's own preprocessing, for official / MedSAM weights used as they are): scale the
  longest side to ``S`` keeping the aspect ratio, pad bottom/right; mask logits are cropped to the
  unpadded area and resized back to ``(Y, X)`` (bilinear), as ``SamPredictor.postprocess_masks``.
* ``"native"`` (models trained by :class:`~medsam_kit.engine.trainer.Trainer`, which sees ``S x S``
  windows of preprocessed slices at their own resolution): no resizing; an ``S x S`` *window* of the
  slice (origin ``window = (y, x)``, padded where the slice is smaller) goes to the model. Along
  an axis shorter than ``S`` the slice is *centred* (origin ``(n - S) // 2 <= 0``, padding on both
  sides), as the trainer's crops and its sliding-window validation place it; longer axes get
  windows on a grid of stride ``S / 2`` so a second click near the first one reuses its embedding.
  A box is decoded in the slice-centred window when that window holds the whole box (the object
  away from the window's edges, as in training) and no already-encoded window holds it too, else
  in the grid window that best contains it;
  the coarse head runs on all grid windows of a slice and averages their class probabilities over
  the part of each window that lies on the slice.

Unlike SAM's ``apply_coords`` (``x * scale``), points map pixel *centres* exactly
(``(x + 0.5) * s - 0.5``) and boxes map their *edges* (``x * s``), so a box round-trips to itself.

Mask prompts (:meth:`SlicePredictor.mask_to_model`): the decoder's mask input is ``(1, 1, S/4, S/4)``
*logits* over the model input (SAM feeds a previous prediction's ``low_res_logits`` back). A mask
prompt is a ``(h, w)`` array covering the whole slice (any resolution): values all in ``[0, 1]`` are a
binary / probability mask and become ``logit(p)`` clipped to ``±MASK_LOGIT`` (so 0/1 → -10/+10,
SAM-2's rule for a mask given as a prompt, ``SAM2Base._use_mask_as_output``); any other values are
logits used as they are. The logits are resized to the slice, placed like the image (resized and
padded in "longest" mode, cut with the same window in "native" mode), padded with 0 (no evidence
either way) and downsampled to ``S/4``. A mask-only prompt is decoded in the window that best holds
the mask's foreground box, as a box would be.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from medsam_kit.infer.cache import EmbeddingCache
from medsam_kit.models.segmenter_model import Features, SegmenterModel
from medsam_kit.prompts.from_masks import tight_box
from medsam_kit.prompts.types import BoxPrompt

OUTSIDE_LOGIT = -20.0  # "native" mode: slice pixels outside the decoded window are confidently background
# Binary mask prompt -> ±10 logits, as SAM-2 turns a mask prompt into logits (sigmoid(-10) = 4.5e-5).
MASK_LOGIT = 10.0
MODES = ("longest", "native")


@dataclass(frozen=True)
class ResizeTransform:
    """Slice ``(Y, X)`` ↔ model input ``(S, S)``: longest side scaled to ``S``, padded bottom/right.

    Attributes:
        shape_yx: the slice's ``(Y, X)``.
        size: the model's square input side ``S``.
        pad_value: model-input value of the padding (training pads with the model-input value of
            a preprocessed 0, :func:`medsam_kit.engine.intensity.unit_pad_value`).
        window: ``(y, x)`` origin of an ``S x S`` native-resolution window ("native" mode), or None
            for "longest" mode (whole slice resized). An origin may be negative (the slice starts
            inside the window: padding before it) and a window may run past the slice's end.
    """

    shape_yx: tuple[int, int]
    size: int
    pad_value: float = 0.0
    window: tuple[int, int] | None = None

    @property
    def window_span(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Native window ↔ slice overlap: ``((sy, sx), (ty, tx), (h, w))``.

        ``slice[sy:sy + h, sx:sx + w]`` is ``model_input[ty:ty + h, tx:tx + w]``; a negative origin
        gives ``ty, tx > 0`` (padding before the slice). Only for windows (raises otherwise).
        """
        if self.window is None:
            raise ValueError("window_span is defined for native windows only")
        (ny, nx), size, (oy, ox) = self.shape_yx, self.size, self.window
        sy, sx, ty, tx = max(0, oy), max(0, ox), max(0, -oy), max(0, -ox)
        h, w = min(size - ty, ny - sy), min(size - tx, nx - sx)
        if h <= 0 or w <= 0:
            raise ValueError(f"window {self.window} of size {size} does not overlap a {self.shape_yx} slice")
        return (sy, sx), (ty, tx), (h, w)

    @property
    def resized_yx(self) -> tuple[int, int]:
        """``(h, w)`` of the slice inside the model input (before padding)."""
        if self.window is not None:
            return self.window_span[2]
        ny, nx = self.shape_yx
        scale = self.size / max(ny, nx)
        return max(1, min(self.size, int(ny * scale + 0.5))), max(1, min(self.size, int(nx * scale + 0.5)))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Per-axis scale ``(sx, sy)`` = resized / original (equal up to rounding of the size)."""
        if self.window is not None:
            return 1.0, 1.0
        (h, w), (ny, nx) = self.resized_yx, self.shape_yx
        return w / nx, h / ny

    @property
    def offset_xy(self) -> tuple[float, float]:
        """Slice position ``(x, y)`` of the model input's top-left pixel edge."""
        return (0.0, 0.0) if self.window is None else (float(self.window[1]), float(self.window[0]))

    # ---------------------------------------------------------------- images and masks
    def image_to_model(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, Y, X)`` → ``(B, C, S, S)``: bilinear (antialiased when shrinking), padded with ``pad_value``.

        A native window copies its part of the slice to its place in the window; the rest is padding.
        """
        if self.window is not None:
            (sy, sx), (ty, tx), (h, w) = self.window_span
            out = torch.full((*images.shape[:-2], self.size, self.size), float(self.pad_value), dtype=torch.float32,
                             device=images.device)
            out[..., ty:ty + h, tx:tx + w] = images[..., sy:sy + h, sx:sx + w].float()
            return out
        h, w = self.resized_yx
        if (h, w) != tuple(images.shape[-2:]):
            images = F.interpolate(images.float(), size=(h, w), mode="bilinear", align_corners=False,
                                   antialias=h < images.shape[-2])
        return F.pad(images.float(), (0, self.size - w, 0, self.size - h), value=float(self.pad_value))

    def mask_to_slice(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., S, S)`` model-input logits → ``(..., Y, X)`` slice logits (crop padding, bilinear).

        In "native" mode the slice outside the window gets ``OUTSIDE_LOGIT`` (a confident "no") and
        the window's padding is dropped.
        """
        if self.window is not None:
            (sy, sx), (ty, tx), (h, w) = self.window_span
            out = torch.full((*logits.shape[:-2], *self.shape_yx), OUTSIDE_LOGIT, dtype=torch.float32,
                             device=logits.device)
            out[..., sy:sy + h, sx:sx + w] = logits[..., ty:ty + h, tx:tx + w].float()
            return out
        h, w = self.resized_yx
        cropped = logits[..., :h, :w]
        lead = cropped.shape[:-2]
        flat = cropped.reshape(-1, 1, h, w).float()
        out = F.interpolate(flat, size=self.shape_yx, mode="bilinear", align_corners=False)
        return out.reshape(*lead, *self.shape_yx)

    # ---------------------------------------------------------------- prompts
    def box_to_model(self, box: BoxPrompt | Sequence[float]) -> np.ndarray:
        """End-exclusive slice box → ``(4,)`` inclusive model-input corners ``(x0, y0, x1 - 1, y1 - 1)`` scaled."""
        x0, y0, x1, y1 = box.as_tuple() if isinstance(box, BoxPrompt) else (float(v) for v in box)
        (sx, sy), (ox, oy) = self.scale_xy, self.offset_xy
        # Edges scale exactly; the inclusive last pixel starts one pixel before the exclusive edge.
        return np.array([(x0 - ox) * sx, (y0 - oy) * sy, (x1 - ox) * sx - 1.0, (y1 - oy) * sy - 1.0])

    def box_from_model(self, corners: Sequence[float]) -> BoxPrompt:
        """Inverse of :meth:`box_to_model`."""
        (sx, sy), (ox, oy) = self.scale_xy, self.offset_xy
        c0, r0, c1, r1 = (float(v) for v in corners)
        return BoxPrompt(c0 / sx + ox, r0 / sy + oy, (c1 + 1.0) / sx + ox, (r1 + 1.0) / sy + oy)

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` slice ``(x, y)`` pixel-index → model-input pixel-index (pixel centres map exactly)."""
        (sx, sy), (ox, oy) = self.scale_xy, self.offset_xy
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([(points[:, 0] + 0.5 - ox) * sx - 0.5, (points[:, 1] + 0.5 - oy) * sy - 0.5], axis=1)

    def points_from_model(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`points_to_model`."""
        (sx, sy), (ox, oy) = self.scale_xy, self.offset_xy
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([(points[:, 0] + 0.5) / sx - 0.5 + ox, (points[:, 1] + 0.5) / sy - 0.5 + oy], axis=1)


Window = tuple[int, int] | None
MaskLike = np.ndarray | torch.Tensor


def mask_logits(mask: MaskLike) -> torch.Tensor:
    """A mask prompt ``(h, w)`` as float32 logits (the rule of the module docstring).

    Values all in ``[0, 1]`` (binary or probability) → ``logit(p)`` clipped to ``±MASK_LOGIT``;
    otherwise the values already are logits (e.g. a saved SAM low-res prediction) and are kept.
    """
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32) if isinstance(mask, np.ndarray) else mask)
    tensor = tensor.detach().float().cpu()
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2 or tensor.numel() == 0 or not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"a mask prompt must be a finite non-empty 2D (h, w) array, got shape {tuple(tensor.shape)}")
    if float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0:
        return torch.logit(tensor.double()).clamp(-MASK_LOGIT, MASK_LOGIT).float()  # 0 / 1: -inf / inf -> ∓10
    return tensor


def _centred(length: int, size: int) -> int:
    """Origin of the window centred on an axis of ``length`` (negative when the axis is shorter)."""
    return (length - size) // 2


def _grid(length: int, size: int) -> list[int]:
    """Window origins along one axis: stride ``size // 2``, the last window flush with the end.

    An axis no longer than ``size`` gets one window centred on it (padding on both sides), where
    the trainer's crops and sliding-window validation put such a slice, not flush top-left.
    """
    if length <= size:
        return [_centred(length, size)]
    stride = max(1, size // 2)
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


class SlicePredictor:
    """Encode slices of a volume through an :class:`EmbeddingCache` and decode prompts on them.

    Args:
        model: a :class:`SegmenterModel` (or any object with ``image_size``, ``in_channels``,
            ``encode``, ``decode``, ``coarse_logits`` of the same contract).
        cache: shared embedding cache (a new default-size one when None).
        batch_size: slices per encoder call.
        device: where tensors are sent (default: the model's parameters' device, else CPU).
        pad_value: model-input value of the padding (see :class:`ResizeTransform`).
        mode: ``"longest"`` (resize whole slices, SAM style) or ``"native"`` (``S x S`` windows at
            the slice's resolution, as the trainer sees them); see the module docstring.
    """

    def __init__(self, model: SegmenterModel, cache: EmbeddingCache | None = None, batch_size: int = 8,
                 device: str | torch.device | None = None, pad_value: float = 0.0, mode: str = "longest") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.mode = mode
        self.pad_value = float(pad_value)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.batch_size = max(1, int(batch_size))
        if device is None:
            params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
            device = params[0].device if params else "cpu"
        self.device = torch.device(device)
        self.decoder_calls = 0

    @property
    def size(self) -> int:
        return int(self.model.image_size)

    # ------------------------------------------------------------------ windows
    def transform(self, shape_yx: Sequence[int], window: Window = None) -> ResizeTransform:
        """Transform of a ``(Y, X)`` slice (of one of its windows in "native" mode; default the first grid window)."""
        if self.mode == "native" and window is None:
            window = self.windows(shape_yx)[0]
        return ResizeTransform((int(shape_yx[0]), int(shape_yx[1])), self.size, self.pad_value, window)

    def windows(self, shape_yx: Sequence[int]) -> list[Window]:
        """All windows covering a slice: ``[None]`` in "longest" mode, the stride-``S/2`` grid in "native"."""
        if self.mode == "longest":
            return [None]
        return [(y, x) for y in _grid(int(shape_yx[0]), self.size) for x in _grid(int(shape_yx[1]), self.size)]

    def window_for(self, shape_yx: Sequence[int], box: BoxPrompt | None, points: np.ndarray | None = None,
                   cached: Callable[[tuple[int, int]], bool] | None = None, mask: MaskLike | None = None) -> Window:
        """The window a prompt is decoded in.

        The prompt's extent is the box; without one, the points' extent joined with the mask
        prompt's foreground box (:meth:`mask_box`); without either, the whole slice.
        Candidates are the grid windows, plus the slice-centred window when it holds the whole box
        (or mask box: the object away from the window's edges, as training and validation saw it;
        on a slice no larger than ``S`` it is the only window). Best: most of the extent inside, then the
        slice-centred window (what validation decodes in; a model trained on few cases is far from
        translation invariant: a box decoded in a window shifted by 27 px went from Dice 0.92 to
        0.0 on a held-out ACDC phantom), then a window whose embedding is ``cached`` (a second click
        or the next propagated slice reuses earlier encoder work), then the closest centre.
        """
        if self.mode == "longest":
            return None
        size = self.size
        candidates = self.windows(shape_yx)
        centre = (_centred(int(shape_yx[0]), size), _centred(int(shape_yx[1]), size))
        has_points = points is not None and len(points) > 0
        if box is None and mask is not None:
            box = self.mask_box(mask, shape_yx)
            if box is not None and has_points:  # the extent of both: the mask and the clicks refining it
                (px0, py0), (px1, py1) = np.min(points, 0) + 0.5, np.max(points, 0) + 0.5
                box = BoxPrompt(min(box.x0, px0), min(box.y0, py0), max(box.x1, px1), max(box.y1, py1))
        if box is not None:
            x0, y0, x1, y1 = box.as_tuple()
            holds = centre[1] <= x0 and x1 <= centre[1] + size and centre[0] <= y0 and y1 <= centre[0] + size
            if holds and centre not in candidates:
                candidates = [centre, *candidates]
        elif has_points:
            (x0, y0), (x1, y1) = np.min(points, 0) + 0.5, np.max(points, 0) + 0.5
        else:
            x0, y0, x1, y1 = 0.0, 0.0, float(shape_yx[1]), float(shape_yx[0])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2

        def score(window: tuple[int, int]) -> tuple[float, int, int, float]:
            wy, wx = window
            inside = max(0.0, min(x1, wx + size) - max(x0, wx)) * max(0.0, min(y1, wy + size) - max(y0, wy))
            reuse = 0 if cached is not None and cached(window) else 1
            off_centre = 0 if window == centre else 1
            return (-inside, off_centre, reuse, (wx + size / 2 - cx) ** 2 + (wy + size / 2 - cy) ** 2)

        return min(candidates, key=score)

    # ------------------------------------------------------------------ mask prompts
    @staticmethod
    def _mask_on_slice(mask: MaskLike, shape_yx: Sequence[int]) -> torch.Tensor:
        """``(1, 1, Y, X)`` float32 CPU logits of a mask prompt covering the slice (bilinear from its ``(h, w)``)."""
        logits = mask_logits(mask)[None, None]
        shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
        if tuple(logits.shape[-2:]) != shape_yx:
            logits = F.interpolate(logits, size=shape_yx, mode="bilinear", align_corners=False)
        return logits

    def mask_box(self, mask: MaskLike, shape_yx: Sequence[int]) -> BoxPrompt | None:
        """End-exclusive slice box of a mask prompt's foreground (logits > 0 on the slice); None when empty."""
        return tight_box(self._mask_on_slice(mask, shape_yx)[0, 0].numpy() > 0)

    def mask_to_model(self, mask: MaskLike, shape_yx: Sequence[int], window: Window = None) -> torch.Tensor:
        """A mask prompt → the decoder's mask input ``(1, 1, S/4, S/4)`` logits on the device.

        Args:
            mask: ``(h, w)`` binary / probability mask or logits covering the whole ``(Y, X)`` slice
                (any resolution; see the module docstring for how values become logits).
            shape_yx: the slice's ``(Y, X)``.
            window: "native" mode: the window the prompt is decoded in (default the first grid
                window, as :meth:`transform`); the mask is cut like the image of that window, so
                its pixels line up with the image's in model space. Ignored in "longest" mode.

        Returns:
            Logits placed like the image (resized + padded, or windowed), padded with 0 and
            downsampled to ``S/4`` the way the model itself reduces larger mask inputs.
        """
        logits = self._mask_on_slice(mask, shape_yx)
        window = window if self.mode == "native" else None
        placement = replace(self.transform(logits.shape[-2:], window), pad_value=0.0)  # 0 logit: no evidence
        full = placement.image_to_model(logits)
        low = self.size // 4
        low_res = F.interpolate(full, size=(low, low), mode="bilinear", align_corners=False, antialias=True)
        return low_res.to(self.device)

    # ------------------------------------------------------------------ encoder
    def model_input(self, slices: np.ndarray | torch.Tensor, window: Window = None) -> torch.Tensor:
        """``(B, C, Y, X)`` slices in ``[0, 1]`` → ``(B, C, S, S)`` model input on the device."""
        tensor = torch.as_tensor(np.asarray(slices, dtype=np.float32)) if isinstance(slices, np.ndarray) else slices
        if tensor.ndim != 4:
            raise ValueError(f"slices must be (B, C, Y, X), got shape {tuple(tensor.shape)}")
        if tensor.shape[1] != self.model.in_channels:
            raise ValueError(f"slices have {tensor.shape[1]} channels but the model takes {self.model.in_channels}; "
                             f"stack the volume's channels first or load a model with in_channels="
                             f"{tensor.shape[1]}")
        return self.transform(tensor.shape[-2:], window).image_to_model(tensor.to(self.device))

    def _key(self, z: int, window: Window) -> int | tuple[int, int, int]:
        return int(z) if window is None else (int(z), *window)

    @torch.no_grad()
    def features(self, volume_id: Hashable, volume: np.ndarray, indices: Sequence[int], window: Window = None
                 ) -> Features:
        """Features of slices ``indices`` of ``volume`` ``(C, Z, Y, X)`` in ``[0, 1]`` (cached per slice and window)."""
        if self.mode == "native" and window is None:
            window = self.windows(volume.shape[-2:])[0]
        keys = [self._key(z, window) for z in indices]

        def load(chosen):
            idx = [k if isinstance(k, int) else k[0] for k in chosen]
            return self.model_input(np.moveaxis(volume[:, idx], 1, 0), window)

        return self.cache.features(volume_id, keys, load, self.model.encode, self.batch_size)

    @torch.no_grad()
    def prefetch(self, volume_id: Hashable, volume: np.ndarray, start: int, step: int, window: Window = None) -> None:
        """Encode up to ``batch_size`` uncached slices from ``start`` in direction ``step`` in one batch."""
        if self.mode == "native" and window is None:
            window = self.windows(volume.shape[-2:])[0]
        nz = volume.shape[1]
        ahead = [z for z in range(start, start + step * self.batch_size, step) if 0 <= z < nz]
        missing = [z for z in ahead if (volume_id, self._key(z, window)) not in self.cache]
        if missing:
            self.features(volume_id, volume, missing, window)

    # ------------------------------------------------------------------ decoder
    @torch.no_grad()
    def decode(self, features: Features, shape_yx: Sequence[int], box: BoxPrompt | Sequence[float] | None = None,
               points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
               mask_input: torch.Tensor | None = None, window: Window = None) -> tuple[np.ndarray, torch.Tensor]:
        """Decode one prompt on one slice.

        Args:
            features: one slice's features (batch 1), of ``window`` in "native" mode.
            shape_yx: the slice's ``(Y, X)``.
            box: end-exclusive slice box ``(x0, y0, x1, y1)``, or None.
            points: ``(N, 2)`` slice ``(x, y)``; point_labels ``(N,)`` 1 positive / 0 negative.
            mask_input: ``(1, 1, S/4, S/4)`` low-res logits of a previous prediction, or None.
            window: the features' window ("native" mode).

        Returns:
            ``(logits (Y, X) float32 numpy on the slice grid, low_res_logits (1, 1, S/4, S/4))``.
        """
        if box is None and (points is None or len(points) == 0) and mask_input is None:
            raise ValueError("a slice prediction needs a box, points or a mask input")
        tf = self.transform(shape_yx, window)
        boxes = None
        if box is not None:
            boxes = torch.as_tensor(tf.box_to_model(box)[None], dtype=torch.float32, device=self.device)
        pts = labels = None
        if points is not None and len(points):
            if point_labels is None:
                point_labels = np.ones(len(points), np.int64)
            pts = torch.as_tensor(tf.points_to_model(points)[None], dtype=torch.float32, device=self.device)
            labels = torch.as_tensor(np.asarray(point_labels).reshape(1, -1), dtype=torch.int, device=self.device)
        out = self.model.decode(features.to(self.device), boxes=boxes, points=pts, point_labels=labels,
                                mask_inputs=mask_input)
        self.decoder_calls += 1
        logits = tf.mask_to_slice(out.mask_logits[0, 0])
        return logits.cpu().numpy().astype(np.float32), out.low_res_logits[:, :1]

    @torch.no_grad()
    def predict(self, volume_id: Hashable, volume: np.ndarray, z: int, box: BoxPrompt | None = None,
                points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                mask_input: torch.Tensor | None = None, prefetch_step: int = 0, mask: MaskLike | None = None
                ) -> np.ndarray:
        """``(Y, X)`` logits of one prompt on slice ``z`` of ``volume`` ``(C, Z, Y, X)`` (features from the cache).

        ``mask`` is a mask prompt on the slice grid (``(h, w)`` covering the slice, see
        :meth:`mask_to_model`): it takes part in choosing the window and is placed in it.
        ``mask_input`` is an already placed ``(1, 1, S/4, S/4)`` model-space logit mask (e.g. a
        previous ``low_res_logits`` of the same window); give one or the other.
        ``prefetch_step`` ±1 encodes the next ``batch_size`` slices in that direction in the same
        window with one encoder call (propagation walks through them next).
        """
        if mask is not None and mask_input is not None:
            raise ValueError("give a mask prompt on the slice grid (mask) or a model-space mask_input, not both")
        shape_yx = volume.shape[-2:]
        window = self.window_for(shape_yx, box, points,
                                 cached=lambda w: (volume_id, self._key(z, w)) in self.cache, mask=mask)
        if mask is not None:
            mask_input = self.mask_to_model(mask, shape_yx, window)
        if prefetch_step:
            self.prefetch(volume_id, volume, z, prefetch_step, window)
        features = self.features(volume_id, volume, [z], window)
        return self.decode(features, shape_yx, box, points, point_labels, mask_input, window)[0]

    @torch.no_grad()
    def coarse_probabilities(self, volume_id: Hashable, volume: np.ndarray, indices: Sequence[int]) -> torch.Tensor:
        """Coarse-head class probabilities ``(B, K + 1, Y, X)`` float32 (CPU) of slices ``indices``.

        "native" mode averages the class probabilities of all windows covering each pixel (only the
        part of a window on the slice counts; its padding is dropped).
        """
        shape_yx = tuple(volume.shape[-2:])
        windows = self.windows(shape_yx)
        if windows == [None]:
            logits = self.model.coarse_logits(self.features(volume_id, volume, indices).to(self.device))
            return torch.softmax(self.transform(shape_yx).mask_to_slice(logits).float(), dim=1).cpu()
        total = count = None
        for window in windows:
            (sy, sx), (ty, tx), (h, w) = self.transform(shape_yx, window).window_span
            probs = torch.softmax(self.model.coarse_logits(self.features(volume_id, volume, indices, window)
                                                           .to(self.device)).float(), dim=1)
            probs = probs[..., ty:ty + h, tx:tx + w].cpu()
            if total is None:
                total = torch.zeros((*probs.shape[:2], *shape_yx))
                count = torch.zeros(shape_yx)
            total[..., sy:sy + h, sx:sx + w] += probs
            count[sy:sy + h, sx:sx + w] += 1
        return total / count
