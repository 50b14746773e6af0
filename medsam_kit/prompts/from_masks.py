"""Prompts derived from ground-truth masks, for training and for prompted evaluation.

All functions take one 2D slice mask ``(Y, X)`` (bool or 0/1) or a 2D label slice ``(Y, X)`` int,
and return boxes / points in the package conventions of :mod:`medsam_kit.prompts.types`: boxes
``(x0, y0, x1, y1)`` inclusive-exclusive in (column, row) order, points ``(x, y)`` pixel-index
coordinates with labels 1 positive / 0 negative. An empty mask gives ``None`` (no prompt).

Randomness (box jitter, point sampling) comes from ``rng``: a ``numpy.random.Generator``, an int
seed, or ``None`` for fresh entropy. The same seed gives the same prompts.

Batched helpers over ``(B, Y, X)`` label arrays live in :mod:`medsam_kit.prompts.batch`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts

RngLike = np.random.Generator | int | None

GBT_SAM_BOX_ENLARGE = 1.33  # GBT-SAM: boxes from masks enlarged ~1.33x before prompting


def _mask2d(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D (Y, X) mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def tight_box(mask: np.ndarray) -> BoxPrompt | None:
    """Tight box of a ``(Y, X)`` mask: ``(c_min, r_min, c_max + 1, r_max + 1)``; ``None`` when empty."""
    mask = _mask2d(mask)
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    return BoxPrompt(int(c[0]), int(r[0]), int(c[-1]) + 1, int(r[-1]) + 1)


def perturb_box(box: BoxPrompt, shape_yx: Sequence[int], *, enlarge: float = 1.0, jitter_px: float = 0.0,
                jitter_frac: float = 0.0, rng: RngLike = None, integer: bool = False) -> BoxPrompt:
    """Enlarge, jitter and clip a box (the augmentation of SAM / MedSAM / GBT-SAM training).

    Order: scale width and height by ``enlarge`` about the centre; move each of the four
    coordinates independently by ``U(-b, b)`` with ``b = jitter_px + jitter_frac * side`` (side =
    the enlarged box's width for x0/x1, height for y0/y1); clip to the ``(Y, X)`` slice. With
    ``integer=True`` the result is rounded outwards to whole pixels (never shrinks).

    The result always keeps at least one pixel of width/height inside the slice.
    """
    ny, nx = (int(s) for s in shape_yx)
    if jitter_px < 0 or jitter_frac < 0:
        raise ValueError(f"jitter must be >= 0, got jitter_px={jitter_px}, jitter_frac={jitter_frac}")
    box = box.scaled(enlarge) if enlarge != 1.0 else box
    coords = box.as_array()
    if jitter_px > 0 or jitter_frac > 0:
        sides = np.array([box.width, box.height, box.width, box.height])
        bound = jitter_px + jitter_frac * sides
        coords = coords + np.random.default_rng(rng).uniform(-1.0, 1.0, size=4) * bound
    if integer:
        coords = np.array([np.floor(coords[0]), np.floor(coords[1]), np.ceil(coords[2]), np.ceil(coords[3])])
    x0, x1 = _ordered_span(coords[0], coords[2], nx)
    y0, y1 = _ordered_span(coords[1], coords[3], ny)
    return BoxPrompt(x0, y0, x1, y1)


def _ordered_span(lo: float, hi: float, size: int) -> tuple[float, float]:
    """Clip ``[lo, hi)`` into ``[0, size]`` keeping at least one pixel (jitter may cross or push it out)."""
    lo, hi = min(lo, hi), max(lo, hi)
    lo, hi = float(np.clip(lo, 0, size - 1)), float(np.clip(hi, 1, size))
    if hi - lo < 1.0:
        hi = min(lo + 1.0, float(size))
        lo = hi - 1.0
    return lo, hi


def box_from_mask(mask: np.ndarray, *, enlarge: float = 1.0, jitter_px: float = 0.0, jitter_frac: float = 0.0,
                  rng: RngLike = None, integer: bool = False) -> BoxPrompt | None:
    """Tight box of a ``(Y, X)`` mask, then :func:`perturb_box`; ``None`` for an empty mask."""
    mask = _mask2d(mask)
    box = tight_box(mask)
    if box is None:
        return None
    return perturb_box(box, mask.shape, enlarge=enlarge, jitter_px=jitter_px, jitter_frac=jitter_frac, rng=rng,
                       integer=integer)


def interior_distance(mask: np.ndarray) -> np.ndarray:
    """``(Y, X)`` float distance of each mask pixel to the nearest non-mask pixel (0 outside the mask).

    The image border counts as background, so the deepest point is never glued to the edge.
    """
    padded = np.pad(_mask2d(mask), 1)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def center_point(mask: np.ndarray) -> tuple[float, float] | None:
    """The most interior pixel ``(x, y)`` of a ``(Y, X)`` mask; ``None`` when empty.

    Unlike the centroid or the box centre, it always lies inside the mask (a ring such as the
    myocardium has its centroid in the hole). Ties go to the pixel nearest the centroid, then
    the smallest (row, column), so the result is deterministic.
    """
    mask = _mask2d(mask)
    if not mask.any():
        return None
    dist = interior_distance(mask)
    rows, cols = np.nonzero(dist >= dist.max() - 1e-9)
    mr, mc = np.nonzero(mask)
    d2 = (rows - mr.mean()) ** 2 + (cols - mc.mean()) ** 2
    best = np.lexsort((cols, rows, d2))[0]
    return float(cols[best]), float(rows[best])


def positive_points(mask: np.ndarray, n: int = 1, *, mode: Literal["center", "interior", "random"] = "interior",
                    interior_fraction: float = 0.5, rng: RngLike = None) -> np.ndarray | None:
    """``n`` points ``(n, 2)`` float64 ``(x, y)`` inside a ``(Y, X)`` mask; ``None`` when it is empty.

    Modes: ``"center"`` — the most interior pixel (:func:`center_point`), then random interior
    pixels for ``n > 1``; ``"interior"`` — uniform among pixels whose distance to the boundary is
    at least ``interior_fraction`` × the maximum (away from edges, where coarse masks disagree);
    ``"random"`` — uniform over the mask. Pixels are drawn without replacement unless the
    candidate set has fewer than ``n`` pixels.
    """
    mask = _mask2d(mask)
    if n < 0:
        raise ValueError(f"number of points must be >= 0, got {n}")
    if not mask.any():
        return None
    if mode not in ("center", "interior", "random"):
        raise ValueError(f"unknown positive point mode {mode!r}; use 'center', 'interior' or 'random'")
    if n == 0:
        return np.zeros((0, 2))
    gen = np.random.default_rng(rng)
    if mode == "random":
        candidates = mask
    else:
        dist = interior_distance(mask)
        candidates = mask & (dist >= interior_fraction * dist.max())
    rows, cols = np.nonzero(candidates)
    chosen: list[tuple[float, float]] = []
    if mode == "center":
        chosen.append(center_point(mask))  # type: ignore[arg-type]
    k = n - len(chosen)
    if k > 0:
        idx = gen.choice(len(rows), size=k, replace=k > len(rows))
        chosen.extend((float(cols[i]), float(rows[i])) for i in idx)
    return np.asarray(chosen, dtype=np.float64).reshape(-1, 2)


def negative_points(mask: np.ndarray, n: int = 1, *, region: Literal["near_box", "anywhere"] = "near_box",
                    margin: float = 0.25, rng: RngLike = None) -> np.ndarray:
    """``(m, 2)`` float64 ``(x, y)`` background points of a ``(Y, X)`` mask (``m <= n``).

    ``"near_box"`` draws from background pixels inside the mask's tight box enlarged by
    ``margin`` × its size on each side (hard negatives next to the object); when that region is
    all object, or the mask is empty, it falls back to ``"anywhere"`` (any background pixel).
    Returns fewer than ``n`` points (possibly none) only when the slice has no background.
    """
    mask = _mask2d(mask)
    if region not in ("near_box", "anywhere"):
        raise ValueError(f"unknown negative point region {region!r}; use 'near_box' or 'anywhere'")
    gen = np.random.default_rng(rng)
    background = ~mask
    candidates = background
    box = tight_box(mask)
    if region == "near_box" and box is not None:
        grown = BoxPrompt(box.x0 - margin * box.width, box.y0 - margin * box.height,
                          box.x1 + margin * box.width, box.y1 + margin * box.height).clipped(mask.shape)
        c0, r0, c1, r1 = grown.to_inclusive_pixels()
        near = np.zeros_like(mask)
        near[r0:r1 + 1, c0:c1 + 1] = True
        if (near & background).any():
            candidates = near & background
    rows, cols = np.nonzero(candidates)
    if n <= 0 or len(rows) == 0:
        return np.zeros((0, 2))
    idx = gen.choice(len(rows), size=n, replace=n > len(rows))
    return np.stack([cols[idx], rows[idx]], axis=1).astype(np.float64)


def mask_prompt(mask: np.ndarray, size: Sequence[int] = (256, 256), *, logit: float | None = None) -> np.ndarray:
    """A ``(Y, X)`` mask resized to ``size`` = ``(h, w)`` as a float32 mask input.

    Values are the covered fraction in ``[0, 1]`` (bilinear), or logits ``logit * (2p - 1)`` when
    ``logit`` is given (SAM's mask input is logits, e.g. ``logit=10``). Callers that letterbox the
    image (SAM pads the longest side) must letterbox the mask the same way before calling.
    """
    mask = _mask2d(mask).astype(np.float32)
    h, w = (int(s) for s in size)
    zoomed = ndimage.zoom(mask, (h / mask.shape[0], w / mask.shape[1]), order=1, grid_mode=True, mode="nearest")
    prob = np.clip(zoomed[:h, :w], 0.0, 1.0).astype(np.float32)
    return prob if logit is None else (logit * (2.0 * prob - 1.0)).astype(np.float32)


@dataclass(frozen=True)
class MaskPromptConfig:
    """How to turn a ground-truth mask into prompts (defaults: one jittered box + one interior point).

    Attributes:
        box: give a box.
        enlarge: box scale about its centre (1.0 tight; GBT-SAM uses :data:`GBT_SAM_BOX_ENLARGE`).
        jitter_px, jitter_frac: per-coordinate jitter bound ``jitter_px + jitter_frac * side``.
        integer_box: round boxes outwards to whole pixels.
        n_positive, positive_mode, interior_fraction: see :func:`positive_points`.
        n_negative, negative_region, negative_margin: see :func:`negative_points`.
        mask_size: ``(h, w)`` to attach :func:`mask_prompt` of the mask; ``None`` for no mask input.
        mask_logit: see :func:`mask_prompt`.
    """

    box: bool = True
    enlarge: float = 1.0
    jitter_px: float = 0.0
    jitter_frac: float = 0.0
    integer_box: bool = False
    n_positive: int = 1
    positive_mode: Literal["center", "interior", "random"] = "interior"
    interior_fraction: float = 0.5
    n_negative: int = 0
    negative_region: Literal["near_box", "anywhere"] = "near_box"
    negative_margin: float = 0.25
    mask_size: tuple[int, int] | None = None
    mask_logit: float | None = None


def slice_prompts_from_mask(mask: np.ndarray, config: MaskPromptConfig | None = None,
                            rng: RngLike = None) -> SlicePrompts | None:
    """All prompts of one object from its ``(Y, X)`` mask per ``config``; ``None`` for an empty mask."""
    mask = _mask2d(mask)
    if not mask.any():
        return None
    cfg = config or MaskPromptConfig()
    gen = np.random.default_rng(rng)
    boxes = ()
    if cfg.box:
        boxes = (box_from_mask(mask, enlarge=cfg.enlarge, jitter_px=cfg.jitter_px, jitter_frac=cfg.jitter_frac,
                               rng=gen, integer=cfg.integer_box),)
    pos = positive_points(mask, cfg.n_positive, mode=cfg.positive_mode, interior_fraction=cfg.interior_fraction,
                          rng=gen)
    neg = negative_points(mask, cfg.n_negative, region=cfg.negative_region, margin=cfg.negative_margin, rng=gen)
    points = PointPrompts.concat(PointPrompts(pos, np.ones(len(pos), np.int64)),
                                 PointPrompts(neg, np.zeros(len(neg), np.int64)))
    low_res = None if cfg.mask_size is None else mask_prompt(mask, cfg.mask_size, logit=cfg.mask_logit)
    return SlicePrompts(boxes=boxes, points=points, mask=low_res)


def _classes_of(labels: np.ndarray, classes: Iterable[int] | None) -> list[int]:
    if classes is None:
        return [int(v) for v in np.unique(labels) if v != 0]
    out = [int(c) for c in classes]
    if 0 in out:
        raise ValueError("class 0 is the background; ask for structure label values (>= 1)")
    return out


def slice_prompts_from_labels(label_slice: np.ndarray, classes: Iterable[int] | None = None,
                              config: MaskPromptConfig | None = None,
                              rng: RngLike = None) -> dict[int, SlicePrompts | None]:
    """Per-class prompts from a ``(Y, X)`` integer label slice.

    Args:
        label_slice: ``(Y, X)`` int label map (0 background).
        classes: label values to prompt; default every non-zero value present. A requested class
            absent from the slice maps to ``None``.
        config: see :class:`MaskPromptConfig`.
        rng: one generator drives all classes in ascending order, so the result is seeded.
    """
    label_slice = np.asarray(label_slice)
    if label_slice.ndim != 2:
        raise ValueError(f"expected a 2D (Y, X) label slice, got shape {label_slice.shape}")
    gen = np.random.default_rng(rng)
    classes = sorted(_classes_of(label_slice, classes))
    return {c: slice_prompts_from_mask(label_slice == c, config, gen) for c in classes}


def prompt_set_from_labels(label_volume: np.ndarray, classes: Iterable[int] | None = None, *,
                           slices: Literal["largest", "all"] | Sequence[int] = "largest",
                           config: MaskPromptConfig | None = None, rng: RngLike = None) -> PromptSet:
    """A :class:`PromptSet` from a ``(Z, Y, X)`` label volume (e.g. "a GT box on one slice per class").

    Args:
        label_volume: ``(Z, Y, X)`` int label map.
        classes: label values; default every non-zero value present (absent classes are skipped).
        slices: ``"largest"`` — per class the slice where it has the most pixels (ties: lowest
            index); ``"all"`` — every slice where the class is present; or explicit slice indices
            (slices where a class is absent are skipped for that class).
        config, rng: see :func:`slice_prompts_from_labels`.
    """
    label_volume = np.asarray(label_volume)
    if label_volume.ndim != 3:
        raise ValueError(f"expected a 3D (Z, Y, X) label volume, got shape {label_volume.shape}")
    gen = np.random.default_rng(rng)
    result = PromptSet()
    for c in sorted(_classes_of(label_volume, classes)):
        areas = (label_volume == c).sum(axis=(1, 2))
        if isinstance(slices, str):
            if slices not in ("largest", "all"):
                raise ValueError(f"slices must be 'largest', 'all' or a list of slice indices, got {slices!r}")
            chosen = [int(np.argmax(areas))] if slices == "largest" else np.flatnonzero(areas).tolist()
        else:
            chosen = [int(k) for k in slices]
        for k in chosen:
            if not 0 <= k < label_volume.shape[0]:
                raise ValueError(f"slice {k} is outside the volume (Z={label_volume.shape[0]})")
            prompts = slice_prompts_from_mask(label_volume[k] == c, config, gen)
            if prompts is not None:
                result.add(c, k, prompts)
    return result
