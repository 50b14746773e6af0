"""PCSW — *Physical Constraints + Sliding Window* prompts from coarse masks (SSS paper).

An unlabeled volume has no ground truth to derive prompts from, so SSS turns the model's own
coarse (semantic-head) masks into one prompt per structure. The physical constraint: a real
organ or lesion is one connected 3D object, so in a window of consecutive slices its voxels
should mostly belong to a single 3D connected component. For each class:

1. Window lengths ``L`` run from ``ceil(S / 3)`` up to ``floor(S / 2)`` slices (``S`` = slices in
   the volume; at least 1), **shortest first**; for each length the window slides from slice 0
   upward one slice at a time. (The SSS paper describes window lengths from about S/3 to S/2; the
   authors' released code also grows the length, starting from the middle of that range.)
2. In each window: 3D connected components of the class mask; *continuity* = voxels of the
   largest component / all foreground voxels in the window.
3. A window *qualifies* when its continuity is ``>= tau`` (0.8 in SSS) and its largest component
   has at least ``min_voxels`` voxels. The first window length that has a qualifying window
   decides. Which of its qualifying windows is accepted:

   * ``pick="largest"`` (default): the one whose largest component has the most voxels (ties:
     the earliest). It covers the most of the object, so the key slice below is the object's
     widest slice whenever the object fits in the window.
   * ``pick="first"``: the first in scan order — the literal rule of the paper and its released
     code. Scanning from slice 0, the first qualifying window often clips only the tip of the
     object (or holds nothing but a compact false-positive blob), and the "widest slice" is then
     the widest slice *of the tip*; hence not the default.
4. Key slice = the slice where that largest component has the most pixels (ties: the slice
   nearest the component's centre along Z, then the lower index). The prompt is the tight box of
   the component's pixels on that slice and its most interior pixel (maximum of the distance
   transform — unlike the box centre it is always on the object, also for rings such as the
   myocardium; the released code uses the box centre).

Fallbacks: no qualifying window → the slice holding the largest single 2D component, with that
component's box and interior point, ``fallback=True``; no foreground (or fewer than
``min_voxels`` voxels of the class in the whole volume) → ``None``.

Coordinates: slice index along the array's first axis; boxes ``(x0, y0, x1, y1)``
inclusive-exclusive and points ``(x, y)`` pixel-index, as in :mod:`medsam_kit.prompts.types`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from medsam_kit.prompts.from_masks import center_point, tight_box
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts

TAU = 0.8  # SSS: continuity a window must reach to be trusted as one physical object


@dataclass(frozen=True)
class PcswPrompt:
    """The PCSW prompt of one class.

    Attributes:
        slice_index: key slice (index along Z).
        box: tight box of the object on the key slice, ``(x0, y0, x1, y1)`` inclusive-exclusive.
        point: ``(x, y)`` most interior pixel of the object on the key slice (a positive point).
        continuity: of the accepted window; for a fallback, the best continuity any window reached.
        window: accepted window ``(start, stop)`` slices, stop exclusive; ``None`` for a fallback.
        fallback: ``True`` when no window qualified and the largest 2D component was used.
        slices: ``((z, box, point), ...)``: the accepted 3D component's tight box and most interior
            pixel on *each* slice it touches (the key slice included), in slice order; a fallback
            has its one slice. What a decoder without memory needs to be prompted on every slice
            of the object rather than only on the key slice.
    """

    slice_index: int
    box: BoxPrompt
    point: tuple[float, float]
    continuity: float
    window: tuple[int, int] | None
    fallback: bool
    slices: tuple[tuple[int, BoxPrompt, tuple[float, float]], ...] = ()

    def to_slice_prompts(self) -> SlicePrompts:
        """Box + the positive point, ready for a SAM decoder."""
        return SlicePrompts(boxes=(self.box,), points=PointPrompts(np.asarray([self.point]), np.ones(1, np.int64)))


def pcsw_window_lengths(num_slices: int) -> list[int]:
    """Window lengths tried, in order: ``ceil(S/3) .. floor(S/2)`` (at least one length, >= 1)."""
    if num_slices < 1:
        raise ValueError(f"volume must have at least one slice, got {num_slices}")
    shortest = max(1, math.ceil(num_slices / 3))
    longest = max(shortest, num_slices // 2)
    return list(range(shortest, longest + 1))


class _SliceGraph:
    """2D components of every slice as graph nodes, joined across neighbouring slices.

    Windows share most of their slices, so labelling each window in 3D would redo the same work
    hundreds of times; components of a window are instead the connected parts of the sub-graph
    of its slices' 2D components (exactly the 3D components for the given connectivity).
    """

    def __init__(self, mask: np.ndarray, connectivity: int) -> None:
        structure = ndimage.generate_binary_structure(3, connectivity)
        self.labels2d: list[np.ndarray] = []
        sizes, slices = [], []
        offset = 0
        for z, plane in enumerate(mask):
            lab, n = ndimage.label(plane, structure=structure[1])
            sizes.append(np.bincount(lab.ravel(), minlength=n + 1)[1:])
            lab[lab > 0] += offset  # global 1-based node ids
            self.labels2d.append(lab)
            slices.append(np.full(n, z))
            offset += n
        self.size = np.concatenate(sizes).astype(np.int64)
        self.slice = np.concatenate(slices).astype(np.int64)  # non-decreasing: nodes are in slice order
        # Nodes of slice z are [first_node[z], first_node[z + 1]); edges between z and z + 1 likewise.
        self.first_node = np.searchsorted(self.slice, np.arange(len(mask) + 1))
        edges = [self._links(self.labels2d[z], self.labels2d[z + 1], structure[0]) for z in range(len(mask) - 1)]
        self.first_edge = np.cumsum([0] + [len(e) for e in edges])
        self.edges = np.concatenate(edges) - 1 if edges else np.zeros((0, 2), np.int64)  # 0-based node ids

    @staticmethod
    def _links(lower: np.ndarray, upper: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """``(E, 2)`` pairs of 1-based node ids touching between two neighbouring slices."""
        ny, nx = lower.shape
        pairs = []
        for dy, dx in np.argwhere(footprint) - 1:
            a = lower[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
            b = upper[max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)]
            both = (a > 0) & (b > 0)
            pairs.append(np.stack([a[both], b[both]], axis=1))
        return np.unique(np.concatenate(pairs), axis=0).astype(np.int64)

    def components(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Node ids (0-based) of slices ``[start, stop)`` and their component labels."""
        lo, hi = self.first_node[start], self.first_node[stop]
        e = self.edges[self.first_edge[start]:self.first_edge[stop - 1]] - lo
        graph = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(hi - lo, hi - lo))
        _, comp = connected_components(graph, directed=False)
        return np.arange(lo, hi), comp


def _window_result(graph: _SliceGraph, start: int, stop: int) -> tuple[float, int, np.ndarray]:
    """(continuity, voxels of the largest component, its node ids) in slices ``[start, stop)``."""
    nodes, comp = graph.components(start, stop)
    if len(nodes) == 0:  # a gap between foreground slices
        return 0.0, 0, nodes
    sizes = np.bincount(comp, weights=graph.size[nodes])
    best = int(np.argmax(sizes))
    return float(sizes[best] / sizes.sum()), int(sizes[best]), nodes[comp == best]


def _key_slice(graph: _SliceGraph, nodes: np.ndarray) -> int:
    """Slice where the component has the most pixels; ties → nearest its Z centre, then lowest."""
    z = graph.slice[nodes]
    area = np.bincount(z, weights=graph.size[nodes])
    centre = float(np.sum(z * graph.size[nodes]) / graph.size[nodes].sum())
    tied = np.flatnonzero(area >= area.max())
    return int(tied[np.argmin(np.abs(tied - centre))])


def _prompt_on_slice(graph: _SliceGraph, nodes: np.ndarray, z: int, offset_yx: tuple[int, int]
                     ) -> tuple[BoxPrompt, tuple[float, float]]:
    mask2d = np.isin(graph.labels2d[z], nodes[graph.slice[nodes] == z] + 1)
    box, (px, py) = tight_box(mask2d), center_point(mask2d)
    oy, ox = offset_yx
    return BoxPrompt(box.x0 + ox, box.y0 + oy, box.x1 + ox, box.y1 + oy), (float(px + ox), float(py + oy))


def pcsw_class_prompt(mask: np.ndarray, *, tau: float = TAU, min_voxels: int = 10, connectivity: int = 3,
                      pick: Literal["first", "largest"] = "largest",
                      window_lengths: Sequence[int] | None = None) -> PcswPrompt | None:
    """PCSW prompt of one binary ``(Z, Y, X)`` mask (see the module docstring for the rule).

    Args:
        mask: ``(Z, Y, X)`` bool (or 0/1) coarse mask of one class.
        tau: continuity threshold.
        min_voxels: smallest largest-component (voxels) that may be accepted, and the least
            foreground a class needs to get any prompt (stray coarse-mask voxels are not an object).
        connectivity: 3D neighbourhood of the components, as in
            ``scipy.ndimage.generate_binary_structure(3, connectivity)``: 1 = 6 faces, 2 = 18,
            3 = 26 (default: coarse masks of oblique structures touch diagonally between slices;
            the released SSS code uses scipy's default, 1).
        pick: ``"largest"`` (default) or ``"first"`` (paper) qualifying window of the first length
            that has one (see the module docstring).
        window_lengths: override :func:`pcsw_window_lengths` (tried in the given order).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"PCSW needs a 3D (Z, Y, X) mask, got shape {mask.shape}")
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1 (6-neighbourhood), 2 (18) or 3 (26), got {connectivity}")
    if pick not in ("first", "largest"):
        raise ValueError(f"pick must be 'first' or 'largest', got {pick!r}")
    mask = mask.astype(bool, copy=False)
    num_slices = mask.shape[0]
    if mask.sum() < max(1, min_voxels):
        return None
    # Crop to the foreground: components do not depend on empty surroundings.
    (z0, y0, x0), (z1, y1, x1) = np.argwhere(mask).min(0), np.argwhere(mask).max(0) + 1
    graph = _SliceGraph(mask[z0:z1, y0:y1, x0:x1], connectivity)
    lengths = pcsw_window_lengths(num_slices) if window_lengths is None else [int(n) for n in window_lengths]
    if not lengths or not all(1 <= n <= num_slices for n in lengths):
        raise ValueError(f"window lengths must be 1..{num_slices} slices (the volume's Z), got {lengths}")
    cache: dict[tuple[int, int], tuple[float, int, np.ndarray]] = {}
    best_seen = 0.0
    for length in lengths:
        qualified: list[tuple[int, int, tuple[float, int, np.ndarray]]] = []
        for start in range(0, num_slices - length + 1):
            # Windows that cover the same foreground slices give the same components.
            lo, hi = max(start, z0) - z0, min(start + length, z1) - z0
            if lo >= hi:
                continue
            if (lo, hi) not in cache:
                cache[(lo, hi)] = _window_result(graph, lo, hi)
            result = cache[(lo, hi)]
            best_seen = max(best_seen, result[0])
            if result[0] >= tau and result[1] >= min_voxels:
                qualified.append((start, start + length, result))
                if pick == "first":
                    break
        if qualified:
            start, stop, (cont, _, nodes) = max(qualified, key=lambda q: (q[2][1], -q[0]))
            z = _key_slice(graph, nodes)
            per_slice = tuple((int(k + z0), *_prompt_on_slice(graph, nodes, int(k), (y0, x0)))
                              for k in np.unique(graph.slice[nodes]))
            _, box, point = next(entry for entry in per_slice if entry[0] == z + z0)
            return PcswPrompt(int(z + z0), box, point, cont, (start, stop), False, per_slice)
    biggest = int(np.argmax(graph.size))  # first maximum: lowest slice, then lowest 2D label
    z = int(graph.slice[biggest])
    box, point = _prompt_on_slice(graph, np.array([biggest]), z, (y0, x0))
    return PcswPrompt(int(z + z0), box, point, best_seen, None, True, ((int(z + z0), box, point),))


def pcsw_prompts(coarse_labels: np.ndarray, classes: Iterable[int] | None = None, tau: float = TAU,
                 min_voxels: int = 10, *, connectivity: int = 3, pick: Literal["first", "largest"] = "largest",
                 window_lengths: Sequence[int] | None = None) -> dict[int, PcswPrompt | None]:
    """PCSW prompts, one per class, from a coarse ``(Z, Y, X)`` label map.

    Args:
        coarse_labels: ``(Z, Y, X)`` integer labels (0 background) or bool (treated as class 1),
            e.g. the argmax of the coarse semantic head. Probabilities must be thresholded first.
        classes: label values to prompt; default every non-zero value present. Classes are
            independent: each sees only its own mask.
        tau, min_voxels, connectivity, pick, window_lengths: see :func:`pcsw_class_prompt`.

    Returns:
        ``{label: PcswPrompt}``, or ``None`` for a class without (enough) foreground.
    """
    coarse_labels = np.asarray(coarse_labels)
    if coarse_labels.ndim != 3:
        raise ValueError(f"PCSW needs a 3D (Z, Y, X) label map, got shape {coarse_labels.shape}")
    if not (coarse_labels.dtype == bool or np.issubdtype(coarse_labels.dtype, np.integer)):
        raise ValueError(f"PCSW needs integer labels or a bool mask, got dtype {coarse_labels.dtype}; threshold "
                         f"or argmax the coarse probabilities first")
    if coarse_labels.dtype == bool:
        coarse_labels = coarse_labels.astype(np.uint8)
    if classes is None:
        classes = [int(v) for v in np.unique(coarse_labels) if v != 0]
    if 0 in {int(c) for c in classes}:
        raise ValueError("class 0 is the background; ask PCSW for structure label values (>= 1)")
    return {int(c): pcsw_class_prompt(coarse_labels == c, tau=tau, min_voxels=min_voxels, connectivity=connectivity,
                                      pick=pick, window_lengths=window_lengths)
            for c in sorted(int(c) for c in classes)}


def pcsw_prompt_set(results: dict[int, PcswPrompt | None], include_fallbacks: bool = True) -> PromptSet:
    """A :class:`PromptSet` of the results of :func:`pcsw_prompts` (box + positive point per class)."""
    prompt_set = PromptSet()
    for label, result in results.items():
        if result is not None and (include_fallbacks or not result.fallback):
            prompt_set.add(label, result.slice_index, result.to_slice_prompts())
    return prompt_set
