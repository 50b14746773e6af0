"""Prompt types shared by training (prompts from ground truth), users (JSON files) and PCSW.

Coordinate conventions (one for the whole package):

* A **slice** is a 2D ``(Y, X)`` array: ``slice_array[row, column]``; a volume ``(Z, Y, X)`` has
  slices ``volume[k]`` for slice index ``k`` (the array's first axis, i.e. index axis ``z``).
* **Points** are ``(x, y)`` = ``(column, row)`` in *pixel-index* coordinates: the centre of pixel
  ``slice_array[r, c]`` is ``(x, y) = (c, r)``. This is what SAM's ``point_coords`` expects (its
  prompt encoder adds the half-pixel shift itself). A point lies on the slice when
  ``-0.5 <= x <= X - 0.5`` and ``-0.5 <= y <= Y - 0.5`` (inside the area the pixels cover).
  Point labels are SAM's: ``1`` positive (on the object), ``0`` negative (background).
* **Boxes** are ``(x0, y0, x1, y1)`` in the same column/row order, **inclusive-exclusive** on the
  pixel-edge grid where pixel column ``c`` covers ``[c, c + 1)``: an integer box selects exactly
  ``slice_array[y0:y1, x0:x1]``, its width is ``x1 - x0``, and the tight box of a mask whose
  columns run from ``c_min`` to ``c_max`` is ``(c_min, ..., c_max + 1, ...)``. A box is valid when
  ``0 <= x0 < x1 <= X`` and ``0 <= y0 < y1 <= Y``. Coordinates may be fractional (after jitter or
  enlargement). This matches SA-1B / COCO boxes (``x1 = x0 + width``); MedSAM-style boxes are
  inclusive (``x1 = c_max``) — convert with :meth:`BoxPrompt.to_inclusive_pixels`.

Containers: :class:`SlicePrompts` holds everything for one object (label value) on one slice;
:class:`PromptSet` maps ``{label_value: {slice_index: SlicePrompts}}`` for a volume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box ``(x0, y0, x1, y1)``, inclusive-exclusive (see module docstring)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, int | float | np.integer | np.floating) and math.isfinite(v) for v in values):
            raise ValueError(f"box {list(values)} must be 4 finite numbers (x0, y0, x1, y1)")
        for name, value in zip(("x0", "y0", "x1", "y1"), values, strict=True):
            object.__setattr__(self, name, float(value))
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"box {self._fmt()} is empty or reversed: expected (x0, y0, x1, y1) with x0 < x1 and "
                             f"y0 < y1 (x = column, y = row, x1/y1 exclusive)")

    def _fmt(self) -> str:
        return "(" + ", ".join(f"{v:g}" for v in self.as_tuple()) + ")"

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def as_array(self) -> np.ndarray:
        """``(4,)`` float64 array ``[x0, y0, x1, y1]`` (SAM's ``box`` argument)."""
        return np.asarray(self.as_tuple(), dtype=np.float64)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(x, y)`` in pixel-index coordinates (a 1-pixel box at column c has centre x = c)."""
        return ((self.x0 + self.x1) / 2 - 0.5, (self.y0 + self.y1) / 2 - 0.5)

    def to_inclusive_pixels(self) -> tuple[int, int, int, int]:
        """Smallest covering box as inclusive pixel indices ``(c_min, r_min, c_max, r_max)`` (MedSAM style)."""
        return (math.floor(self.x0), math.floor(self.y0), math.ceil(self.x1) - 1, math.ceil(self.y1) - 1)

    @classmethod
    def from_inclusive_pixels(cls, c_min: int, r_min: int, c_max: int, r_max: int) -> BoxPrompt:
        """Box covering pixels ``c_min..c_max`` × ``r_min..r_max`` (both ends included)."""
        return cls(c_min, r_min, c_max + 1, r_max + 1)

    def check_inside(self, shape_yx: Sequence[int]) -> None:
        """Raise ``ValueError`` unless ``0 <= x0 < x1 <= X`` and ``0 <= y0 < y1 <= Y``."""
        ny, nx = (int(s) for s in shape_yx)
        if self.x0 < 0 or self.y0 < 0 or self.x1 > nx or self.y1 > ny:
            raise ValueError(f"box {self._fmt()} is outside the {ny}x{nx} (Y x X) slice: expected 0 <= x0 < x1 <= "
                             f"{nx} and 0 <= y0 < y1 <= {ny}")

    def clipped(self, shape_yx: Sequence[int]) -> BoxPrompt:
        """This box intersected with the slice; raises ``ValueError`` if nothing of it is inside."""
        ny, nx = (int(s) for s in shape_yx)
        x0, y0 = max(self.x0, 0.0), max(self.y0, 0.0)
        x1, y1 = min(self.x1, float(nx)), min(self.y1, float(ny))
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box {self._fmt()} does not overlap the {ny}x{nx} (Y x X) slice")
        return BoxPrompt(x0, y0, x1, y1)

    def scaled(self, factor: float) -> BoxPrompt:
        """Box with width and height multiplied by ``factor`` about the same centre (not clipped)."""
        if not factor > 0:
            raise ValueError(f"box scale factor must be > 0, got {factor}")
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = self.width * factor / 2, self.height * factor / 2
        return BoxPrompt(cx - hw, cy - hh, cx + hw, cy + hh)


@dataclass(frozen=True, eq=False)
class PointPrompts:
    """``N`` points with SAM labels.

    Attributes:
        coords: ``(N, 2)`` float64, columns ``(x, y)`` in pixel-index coordinates.
        labels: ``(N,)`` int64, ``1`` positive / ``0`` negative.
    """

    coords: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        coords = np.asarray(self.coords, dtype=np.float64)
        if coords.size == 0:
            coords = coords.reshape(0, 2)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"points must be an (N, 2) array of (x, y), got shape {coords.shape}")
        if not np.all(np.isfinite(coords)):
            raise ValueError(f"points must be finite, got {coords.tolist()}")
        labels = np.ones(len(coords), np.int64) if self.labels is None else np.asarray(self.labels)
        if labels.shape != (len(coords),):
            raise ValueError(f"{len(coords)} points but point labels of shape {labels.shape}; give one label per "
                             f"point (1 positive, 0 negative)")
        if not np.all(np.isin(labels, (0, 1))):
            raise ValueError(f"point labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
        object.__setattr__(self, "coords", coords)
        object.__setattr__(self, "labels", labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.coords)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PointPrompts) and np.array_equal(self.coords, other.coords)
                and np.array_equal(self.labels, other.labels))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    @classmethod
    def concat(cls, *parts: PointPrompts) -> PointPrompts:
        """All points of ``parts`` in order (e.g. positives then negatives)."""
        parts = tuple(p for p in parts if len(p))
        if not parts:
            return cls()
        return cls(np.concatenate([p.coords for p in parts]), np.concatenate([p.labels for p in parts]))

    def check_inside(self, shape_yx: Sequence[int]) -> None:
        """Raise ``ValueError`` naming the first point that does not lie on a ``(Y, X)`` slice."""
        ny, nx = (int(s) for s in shape_yx)
        for n, (x, y) in enumerate(self.coords):
            if not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5):
                raise ValueError(f"point {n} (x={x:g}, y={y:g}) is outside the {ny}x{nx} (Y x X) slice: expected "
                                 f"-0.5 <= x <= {nx - 0.5:g} and -0.5 <= y <= {ny - 0.5:g}")


@dataclass(frozen=True, eq=False)
class SlicePrompts:
    """Prompts for one object (one label value) on one slice.

    Attributes:
        boxes: boxes for the object (SAM takes one per object; several mean separate parts).
        points: positive / negative points.
        mask: optional mask input, a ``(h, w)`` float32 array covering the whole slice (often a
            low-resolution version, e.g. SAM's 256×256 logits); ``None`` when absent.
    """

    boxes: tuple[BoxPrompt, ...] = ()
    points: PointPrompts = field(default_factory=PointPrompts)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = tuple(self.boxes)
        if not all(isinstance(b, BoxPrompt) for b in boxes):
            raise ValueError(f"boxes must be BoxPrompt objects, got {[type(b).__name__ for b in boxes]}")
        object.__setattr__(self, "boxes", boxes)
        if not isinstance(self.points, PointPrompts):
            raise ValueError(f"points must be a PointPrompts, got {type(self.points).__name__}")
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=np.float32)
            if mask.ndim != 2 or not np.all(np.isfinite(mask)):
                raise ValueError(f"mask prompt must be a finite 2D (h, w) array, got shape {mask.shape}")
            object.__setattr__(self, "mask", mask)

    @property
    def is_empty(self) -> bool:
        return not self.boxes and not len(self.points) and self.mask is None

    @property
    def point_coords(self) -> np.ndarray:
        """``(N, 2)`` float64 ``(x, y)``."""
        return self.points.coords

    @property
    def point_labels(self) -> np.ndarray:
        """``(N,)`` int64, 1 positive / 0 negative."""
        return self.points.labels

    def boxes_array(self) -> np.ndarray:
        """``(B, 4)`` float64 ``[x0, y0, x1, y1]`` rows (``(0, 4)`` without boxes)."""
        return np.asarray([b.as_tuple() for b in self.boxes], dtype=np.float64).reshape(-1, 4)

    def check_inside(self, shape_yx: Sequence[int]) -> None:
        """Raise ``ValueError`` when a box or point does not lie on a ``(Y, X)`` slice."""
        for n, box in enumerate(self.boxes):
            try:
                box.check_inside(shape_yx)
            except ValueError as err:
                raise ValueError(f"box {n}: {err}") from None
        self.points.check_inside(shape_yx)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlicePrompts):
            return False
        masks_equal = (self.mask is None and other.mask is None) or (
            self.mask is not None and other.mask is not None and np.array_equal(self.mask, other.mask))
        return self.boxes == other.boxes and self.points == other.points and masks_equal

    __hash__ = None  # type: ignore[assignment]


class PromptSet:
    """Prompts for a volume: ``{label_value: {slice_index: SlicePrompts}}``.

    Label values are the integers of the label map (never 0, the background); slice indices are
    positions along the array's first axis ``Z``. Iteration yields ``(label, slice_index,
    SlicePrompts)`` sorted by label, then slice.
    """

    def __init__(self, prompts: Mapping[int, Mapping[int, SlicePrompts]] | None = None) -> None:
        self._prompts: dict[int, dict[int, SlicePrompts]] = {}
        for label, per_slice in (prompts or {}).items():
            for slice_index, slice_prompts in per_slice.items():
                self.add(label, slice_index, slice_prompts)

    def add(self, label: int, slice_index: int, prompts: SlicePrompts) -> None:
        """Set the prompts of ``label`` on ``slice_index`` (replacing earlier ones)."""
        label, slice_index = _as_index(label, "label value"), _as_index(slice_index, "slice index")
        if label == 0:
            raise ValueError("label value 0 is the background; prompts are for structures (label values >= 1)")
        if not isinstance(prompts, SlicePrompts):
            raise ValueError(f"prompts must be SlicePrompts, got {type(prompts).__name__}")
        if prompts.is_empty:
            raise ValueError(f"label {label}, slice {slice_index}: prompts hold no box, point or mask")
        self._prompts.setdefault(label, {})[slice_index] = prompts

    def labels(self) -> list[int]:
        return sorted(self._prompts)

    def slices(self, label: int) -> list[int]:
        return sorted(self._prompts.get(label, {}))

    def get(self, label: int, slice_index: int) -> SlicePrompts | None:
        return self._prompts.get(label, {}).get(slice_index)

    def for_slice(self, slice_index: int) -> dict[int, SlicePrompts]:
        """``{label: SlicePrompts}`` of every label prompted on ``slice_index``."""
        return {lab: s[slice_index] for lab, s in sorted(self._prompts.items()) if slice_index in s}

    def as_dict(self) -> dict[int, dict[int, SlicePrompts]]:
        """A copy as nested plain dicts, sorted."""
        return {lab: dict(sorted(s.items())) for lab, s in sorted(self._prompts.items())}

    def __iter__(self) -> Iterator[tuple[int, int, SlicePrompts]]:
        for label in self.labels():
            for slice_index in self.slices(label):
                yield label, slice_index, self._prompts[label][slice_index]

    def __len__(self) -> int:
        """Number of (label, slice) entries."""
        return sum(len(s) for s in self._prompts.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptSet) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = ", ".join(f"{lab}: slices {self.slices(lab)}" for lab in self.labels())
        return f"PromptSet({{{body}}})"

    def check_inside(self, shape_zyx: Sequence[int]) -> None:
        """Raise ``ValueError`` naming label and slice when a prompt lies outside a ``(Z, Y, X)`` volume."""
        nz, ny, nx = (int(s) for s in shape_zyx)
        for label, slice_index, prompts in self:
            if slice_index >= nz:
                raise ValueError(f"label {label}: slice {slice_index} is outside the volume (Z={nz} slices, "
                                 f"valid 0..{nz - 1})")
            try:
                prompts.check_inside((ny, nx))
            except ValueError as err:
                raise ValueError(f"label {label}, slice {slice_index}: {err}") from None


def _as_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)
