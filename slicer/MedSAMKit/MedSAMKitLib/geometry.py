"""Slicer geometry <-> medsam-kit prompts and label maps, with numpy only (no ``import slicer``).

Conventions (3D Slicer's, so the Logic can pass what it reads from MRML nodes straight in):

* **IJK** index coordinates: ``i`` = column, ``j`` = row, ``k`` = slice; a voxel array from
  ``slicer.util.arrayFromVolume`` is indexed ``array[k, j, i]`` (``(Z, Y, X)``). Integer ``(i, j, k)``
  is a voxel's centre.
* **RAS** world coordinates in mm. A volume's ``IJKToRAS`` 4x4 matrix maps homogeneous
  ``(i, j, k, 1)`` to ``(R, A, S, 1)``; an oblique volume simply has off-diagonal terms.
* **Markups** control points are RAS positions (world, i.e. after parent transforms). A markups
  **ROI** is a box with a centre, a radius (half the side lengths) and three unit axes in RAS.
* medsam-kit (``medsam_kit.prompts.user_file``) works in the ``(Z, Y, X)`` array's voxel coordinates
  with ``x = i``, ``y = j`` and slices ``k``: a point is ``[x, y]`` under slice key ``"k"``, a box is
  ``[x0, y0, x1, y1]`` inclusive-exclusive on the voxel-edge grid (column ``i`` covers
  ``[i - 0.5, i + 0.5)`` in index units, so a box whose edges lie at continuous ``i_lo .. i_hi`` is
  ``x0 = i_lo + 0.5, x1 = i_hi + 0.5``). Its world geometry is LPS: ``L = -R``, ``P = -A``.

What :func:`prompt_document` sends (default ``coordinates="voxel"``): each point goes to its nearest
slice ``k = round(k)`` with its continuous in-plane ``(i, j)``; each ROI becomes the in-plane box
that encloses its 8 corners (in index space, so an ROI rotated against the volume gets the box that
covers it), placed on the slice of the ROI's centre. The server then propagates from those slices
through the volume. ``coordinates="world"`` sends the same prompts as RAS millimetres instead
(``"space": "RAS"``), for servers that should do the index conversion themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

PROMPT_FORMAT = "medsam-kit-prompts"
PROMPT_VERSION = 1
_SNAP = 1e-6  # voxels: round-off on an edge must not turn a valid prompt into an error
_DECIMALS = 6  # voxel coordinates are sent to 1e-6 voxel: exact enough, and readable JSON (16.5, not 16.499999999)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------------------------- matrices
def as_matrix(ijk_to_ras: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Validated ``(4, 4)`` float64 copy of an IJKToRAS matrix (finite, affine, invertible)."""
    matrix = np.array(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"IJKToRAS must be a finite 4x4 matrix, got {matrix.tolist()}")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"IJKToRAS must be affine (last row 0 0 0 1), got last row {matrix[3].tolist()}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError(f"IJKToRAS is singular (a zero spacing or parallel axes): {matrix[:3, :3].tolist()}")
    return matrix


def ijk_to_ras(ijk: np.ndarray | Sequence[float], ijk_to_ras_matrix: np.ndarray) -> np.ndarray:
    """Index ``(..., 3)`` in ``(i, j, k)`` order -> RAS mm ``(..., 3)``."""
    matrix = as_matrix(ijk_to_ras_matrix)
    return np.asarray(ijk, dtype=float) @ matrix[:3, :3].T + matrix[:3, 3]


def ras_to_ijk(ras: np.ndarray | Sequence[float], ijk_to_ras_matrix: np.ndarray) -> np.ndarray:
    """RAS mm ``(..., 3)`` -> continuous index ``(..., 3)`` in ``(i, j, k)`` order (inverse of :func:`ijk_to_ras`)."""
    matrix = as_matrix(ijk_to_ras_matrix)
    # solve() rather than an explicit inverse: the round trip stays at machine precision for oblique grids.
    return np.linalg.solve(matrix[:3, :3], (np.asarray(ras, dtype=float) - matrix[:3, 3]).T).T


def spacing(ijk_to_ras_matrix: np.ndarray) -> np.ndarray:
    """Voxel size in mm along ``(i, j, k)`` (the column norms of the 3x3 part)."""
    return np.linalg.norm(as_matrix(ijk_to_ras_matrix)[:3, :3], axis=0)


def shear(ijk_to_ras_matrix: np.ndarray) -> float:
    """Largest |cosine| between two index axes of the grid (0 for the orthogonal grids medsam-kit reads;
    sheared grids come e.g. from CT with gantry tilt or a non-rigid parent transform)."""
    axes = as_matrix(ijk_to_ras_matrix)[:3, :3]
    axes = axes / np.linalg.norm(axes, axis=0)
    cosines = axes.T @ axes - np.eye(3)
    return float(np.abs(cosines).max())


def matrix_to_geometry(ijk_to_ras_matrix: np.ndarray) -> dict:
    """medsam-kit's geometry dict (``Geometry.to_dict()``: LPS, ``spacing``/``origin`` in ``(x, y, z)``,
    ``direction`` rows with column ``n`` = LPS unit vector of index axis ``n``) of an IJKToRAS matrix."""
    matrix = as_matrix(ijk_to_ras_matrix)
    lps = _RAS_TO_LPS @ matrix[:3, :]
    steps = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / steps
    return {"spacing": [float(v) for v in steps], "origin": [float(v) for v in lps[:, 3]],
            "direction": [[float(v) for v in row] for row in direction]}


def geometry_to_matrix(geometry: Mapping) -> np.ndarray:
    """IJKToRAS ``(4, 4)`` of a medsam-kit geometry dict (inverse of :func:`matrix_to_geometry`)."""
    try:
        steps = np.asarray(geometry["spacing"], dtype=float).reshape(3)
        origin = np.asarray(geometry["origin"], dtype=float).reshape(3)
        direction = np.asarray(geometry["direction"], dtype=float).reshape(3, 3)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"expected a geometry {{spacing, origin, direction}}, got {dict(geometry)!r} ({err})") \
            from None
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ (direction * steps[None, :])
    matrix[:3, 3] = _RAS_TO_LPS @ origin
    return as_matrix(matrix)


def grid_difference(a: np.ndarray, b: np.ndarray, voxel_fraction: float = 1e-3) -> str:
    """'' when two IJKToRAS matrices place every voxel within ``voxel_fraction`` of the smallest voxel
    (NIfTI and float32 headers round); otherwise a one-line description of the difference."""
    a, b = as_matrix(a), as_matrix(b)
    tolerance = voxel_fraction * float(min(spacing(a).min(), spacing(b).min()))
    parts = []
    if not np.allclose(a[:3, 3], b[:3, 3], rtol=0, atol=tolerance):
        parts.append(f"origin {_fmt(a[:3, 3])} vs {_fmt(b[:3, 3])} mm (RAS)")
    if not np.allclose(a[:3, :3], b[:3, :3], rtol=0, atol=tolerance):
        parts.append(f"axes {_fmt(a[:3, :3].T.ravel())} vs {_fmt(b[:3, :3].T.ravel())}")
    return "; ".join(parts)


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def stack_channels(arrays: Sequence[np.ndarray], matrices: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Scalar volumes ``(Z, Y, X)`` on one grid -> one ``(Z, Y, X, C)`` multi-channel array.

    Args:
        arrays: one array per channel, in the model's channel order.
        matrices: their IJKToRAS matrices (all must describe the same grid).
        names: names used in errors (e.g. the volume node names).
    """
    if not arrays:
        raise ValueError("no channel volumes given")
    first_shape, first_matrix = np.shape(arrays[0]), matrices[0]
    if not len(arrays) == len(matrices) == len(names):
        raise ValueError(f"got {len(arrays)} arrays, {len(matrices)} matrices and {len(names)} names")
    for array, matrix, name in zip(arrays[1:], matrices[1:], names[1:]):
        if np.ndim(array) != 3:
            raise ValueError(f"channel volume {name!r} has {np.ndim(array) - 3} extra axes; pick a scalar volume")
        if np.shape(array) != first_shape:
            raise ValueError(f"channel volume {name!r} is {np.shape(array)[::-1]} voxels (I, J, K) but {names[0]!r} "
                             f"is {first_shape[::-1]}: resample it onto {names[0]!r} first (Resample Scalar/Vector/"
                             f"DWI Volume, or Crop Volume with it as the reference)")
        difference = grid_difference(first_matrix, matrix)
        if difference:
            raise ValueError(f"channel volume {name!r} is not on the grid of {names[0]!r} ({difference}): resample it "
                             f"onto {names[0]!r} first")
    dtype = np.result_type(*arrays)
    return np.stack([np.asarray(a, dtype=dtype) for a in arrays], axis=-1)


# ------------------------------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class RoiBox:
    """A markups ROI in RAS: ``center`` ``(3,)`` mm, ``radius`` ``(3,)`` mm (half the side lengths along
    the ROI's own axes) and ``axes`` ``(3, 3)`` whose columns are the ROI's x, y, z unit vectors in RAS
    (identity for an ROI aligned with the RAS axes)."""

    center: tuple[float, float, float]
    radius: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    name: str = "ROI"

    def corners(self) -> np.ndarray:
        """The 8 corners ``(8, 3)`` in RAS."""
        axes = np.asarray(self.axes, dtype=float)
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        return np.asarray(self.center, dtype=float) + (signs * np.asarray(self.radius, dtype=float)) @ axes.T


@dataclass
class _SliceEntry:
    boxes: list = field(default_factory=list)
    points: list = field(default_factory=list)
    point_labels: list = field(default_factory=list)

    def as_json(self) -> dict:
        entry: dict = {}
        if self.boxes:
            entry["boxes"] = self.boxes
        if self.points:
            entry["points"], entry["point_labels"] = self.points, self.point_labels
        return entry


def _nearest_slice(k: float) -> int:
    return math.floor(k + 0.5)  # round half up: Python's round() sends 2.5 to 2 but 3.5 to 4


def _snap(value: float, lo: float, hi: float) -> float:
    return lo if abs(value - lo) <= _SNAP else hi if abs(value - hi) <= _SNAP else value


def _ras_text(ras: Sequence[float]) -> str:
    return f"R {ras[0]:.1f}, A {ras[1]:.1f}, S {ras[2]:.1f} mm"


def prompt_document(label_name: str, ijk_to_ras_matrix: np.ndarray, shape_zyx: Sequence[int], *,
                    include_ras: np.ndarray | Sequence = (), exclude_ras: np.ndarray | Sequence = (),
                    rois: Sequence[RoiBox] = (), coordinates: str = "voxel") -> dict:
    """The medsam-kit prompt document for one structure from Slicer markups (see the module docstring).

    Args:
        label_name: the structure, one of the server's label names (``/v1/info`` ``labels[].name``).
        ijk_to_ras_matrix: the volume's IJKToRAS (world: including a linear parent transform).
        shape_zyx: ``(Z, Y, X)`` = ``(K, J, I)`` voxel counts of the volume.
        include_ras: ``(N, 3)`` RAS positions of positive points (on the structure).
        exclude_ras: ``(M, 3)`` RAS positions of negative points (background / another structure).
        rois: boxes around the structure.
        coordinates: ``"voxel"`` (converted here) or ``"world"`` (RAS mm, converted by the server).

    Raises:
        ValueError: no prompts, or a prompt outside the volume (one line naming it and its position).
    """
    if coordinates not in ("voxel", "world"):
        raise ValueError(f"coordinates must be 'voxel' or 'world', got {coordinates!r}")
    matrix = as_matrix(ijk_to_ras_matrix)
    nz, ny, nx = (int(n) for n in shape_zyx)
    slices: dict[int, _SliceEntry] = {}

    def world(i: float, j: float, k: int) -> list[float]:
        return [float(v) for v in ijk_to_ras([i, j, k], matrix)]

    for kind, positions, point_label in (("include", include_ras, 1), ("exclude", exclude_ras, 0)):
        positions = np.asarray(positions, dtype=float).reshape(-1, 3)
        for number, (ras, (i, j, k)) in enumerate(zip(positions, ras_to_ijk(positions, matrix)), 1):
            i, j, slice_k = _snap(i, -0.5, nx - 0.5), _snap(j, -0.5, ny - 0.5), _nearest_slice(k)
            if not (0 <= slice_k < nz and -0.5 <= i <= nx - 0.5 and -0.5 <= j <= ny - 0.5):
                raise ValueError(f"{kind} point {number} ({_ras_text(ras)}) is outside the volume: index "
                                 f"(i, j, k) = ({i:.1f}, {j:.1f}, {k:.1f}), volume is {nx} x {ny} x {nz} voxels; "
                                 f"move or delete it")
            entry = slices.setdefault(slice_k, _SliceEntry())
            entry.points.append([round(float(i), _DECIMALS), round(float(j), _DECIMALS)] if coordinates == "voxel"
                                else [float(v) for v in ras])
            entry.point_labels.append(point_label)

    for roi in rois:
        corners = ras_to_ijk(roi.corners(), matrix)
        center_k = float(ras_to_ijk(np.asarray(roi.center, dtype=float), matrix)[2])
        slice_k = _nearest_slice(center_k)
        if not 0 <= slice_k < nz:
            raise ValueError(f"ROI {roi.name!r} is centred outside the volume (slice k = {center_k:.1f}, volume has "
                             f"slices 0..{nz - 1}); move it onto the volume")
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        x0, x1 = max(lo[0] + 0.5, 0.0), min(hi[0] + 0.5, float(nx))
        y0, y1 = max(lo[1] + 0.5, 0.0), min(hi[1] + 0.5, float(ny))
        if not (x1 - x0 > 1e-3 and y1 - y0 > 1e-3):  # narrower than a thousandth of a voxel: nothing to box
            reason = ("lies outside the volume" if hi[0] + 0.5 <= 0 or lo[0] + 0.5 >= nx or hi[1] + 0.5 <= 0
                      or lo[1] + 0.5 >= ny else "has no extent across the slice (drawn in a view along the slices?)")
            raise ValueError(f"ROI {roi.name!r} {reason}: in-plane index range i {lo[0]:.1f}..{hi[0]:.1f}, j "
                             f"{lo[1]:.1f}..{hi[1]:.1f} on a {nx} x {ny} slice; draw the box on a slice of the volume "
                             f"(the view that shows whole slices k)")
        entry = slices.setdefault(slice_k, _SliceEntry())
        if coordinates == "voxel":
            entry.boxes.append([round(float(v), _DECIMALS) for v in (x0, y0, x1, y1)])
        else:
            entry.boxes.append([world(x0 - 0.5, y0 - 0.5, slice_k), world(x1 - 0.5, y1 - 0.5, slice_k)])

    if not slices:
        raise ValueError(f"no prompts for {label_name!r}: place include points and/or an ROI box on the structure")
    document: dict = {"format": PROMPT_FORMAT, "version": PROMPT_VERSION, "coordinates": coordinates}
    if coordinates == "world":
        document["space"] = "RAS"
    document["labels"] = {label_name: {str(k): slices[k].as_json() for k in sorted(slices)}}
    return document


# ------------------------------------------------------------------------------------------ label maps
@dataclass(frozen=True)
class SegmentSpec:
    """One segment to create from a label map: label ``value``, ``name``, ``color`` as Slicer's
    0..1 floats ``(r, g, b)``, and how many voxels carry the value."""

    value: int
    name: str
    color: tuple[float, float, float]
    voxels: int


def _label_fields(label) -> tuple[int, str, Sequence[int]]:
    if isinstance(label, Mapping):
        return int(label["value"]), str(label["name"]), label.get("color", (128, 128, 128))
    return int(label.value), str(label.name), label.color


def segments_from_labelmap(labels: np.ndarray, label_infos: Iterable, only_values: Iterable[int] | None = None,
                           include_empty: bool = True) -> list[SegmentSpec]:
    """Segments of a ``(Z, Y, X)`` label map, named and coloured from the server's labels.

    Args:
        labels: integer label map (0 = background).
        label_infos: ``/v1/info`` / ``X-MedSAM-Labels`` entries (``value``, ``name``, ``color`` 0..255),
            as mappings or objects with those attributes.
        only_values: restrict to these label values (a prompted request updates only what was prompted).
        include_empty: also list labels absent from the map (``voxels == 0``), so every structure keeps
            its segment.

    Returns:
        One :class:`SegmentSpec` per label value, in value order. Values present in the map but
        unknown to ``label_infos`` get the name ``"label_<value>"`` and grey.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) label map, got shape {labels.shape}")
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False)) if labels.size else np.zeros(1, np.int64)
    known = {}
    for label in label_infos:
        value, name, color = _label_fields(label)
        if value == 0:
            continue
        rgb = tuple(float(c) / 255.0 for c in color)
        if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
            raise ValueError(f"label {name!r}: colour must be 3 integers 0..255, got {list(color)}")
        known[value] = (name, rgb)
    present = {int(v) for v in np.flatnonzero(counts) if v != 0}
    values = sorted((set(known) if include_empty else set()) | present)
    if only_values is not None:
        wanted = {int(v) for v in only_values}
        values = [v for v in values if v in wanted]
    specs = []
    for value in values:
        name, color = known.get(value, (f"label_{value}", (0.5, 0.5, 0.5)))
        specs.append(SegmentSpec(value, name, color, int(counts[value]) if value < len(counts) else 0))
    return specs


def segment_id_table(value_to_segment_id: Mapping[int, str]) -> list[str]:
    """Slicer's ``updatedSegmentIDs`` list for ``ImportLabelmapToSegmentationNode``: entry ``v - 1`` is the
    segment that receives label value ``v``; ``""`` for values that update no segment."""
    if not value_to_segment_id:
        return []
    if min(value_to_segment_id) < 1:
        raise ValueError(f"label values must be >= 1, got {sorted(value_to_segment_id)}")
    table = [""] * max(value_to_segment_id)
    for value, segment_id in value_to_segment_id.items():
        table[value - 1] = segment_id
    return table


def keep_values(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """``labels`` with every value not in ``values`` set to 0 (uint8/uint16 kept)."""
    labels = np.asarray(labels)
    return np.where(np.isin(labels, list(values)), labels, 0).astype(labels.dtype, copy=False)
