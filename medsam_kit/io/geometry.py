"""Geometry of a voxel grid in world space, with one convention for the whole package.

Conventions (used everywhere in medsam_kit):

* **Arrays** are indexed ``(Z, Y, X)`` — slowest to fastest — exactly as
  ``SimpleITK.GetArrayFromImage`` returns them. Multi-channel arrays are ``(C, Z, Y, X)``.
* **Geometry** follows ITK / DICOM: world coordinates are **LPS** millimetres.
  ``spacing`` and ``origin`` are ordered ``(x, y, z)`` — the *reverse* of the array axes —
  and ``direction`` is a 3×3 matrix whose column ``j`` is the LPS unit vector of index axis
  ``j`` (``j = 0`` is the array's last axis X). A voxel at array index ``[k, j, i]`` sits at
  ``origin + direction @ (spacing * (i, j, k))``.

Use :attr:`Geometry.spacing_zyx` when an algorithm needs the spacing in array order
(metrics, distance transforms).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# RAS = diag(-1, -1, 1) @ LPS; NIfTI affines are RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _as_triplet(values: Sequence[float], name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (3,):
        raise ValueError(f"{name} must have 3 values (x, y, z), got {list(arr)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {list(arr)}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True)
class Geometry:
    """Placement of a ``(Z, Y, X)`` voxel grid in LPS world space (see module docstring).

    Attributes:
        spacing: voxel size in mm along index axes ``(x, y, z)``; all > 0.
        origin: LPS position in mm of the centre of voxel ``[0, 0, 0]``.
        direction: 3×3 row-major tuple; column ``j`` is the LPS direction of index axis ``j``.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = field(
        default=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )

    def __post_init__(self) -> None:
        spacing = _as_triplet(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {spacing}")
        direction = np.asarray(self.direction, dtype=float)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite 3x3 matrix, got {self.direction!r}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError(f"direction must be orthonormal (columns of unit length, at right angles), got "
                             f"{direction.round(4).tolist()}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _as_triplet(self.origin, "origin"))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in direction))

    # ----------------------------------------------------------------- views
    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction as a ``(3, 3)`` float array (columns = index axes x, y, z)."""
        return np.asarray(self.direction, dtype=float)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order ``(z, y, x)``."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def is_right_handed(self) -> bool:
        return bool(np.linalg.det(self.direction_matrix) > 0)

    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous index ``(i, j, k, 1)`` (x, y, z order) to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> np.ndarray:
        """4×4 NIfTI-style affine: index ``(i, j, k, 1)`` to RAS mm."""
        affine = self.affine_lps()
        affine[:3, :] = _LPS_TO_RAS @ affine[:3, :]
        return affine

    def index_to_world(self, ijk: np.ndarray | Sequence[float]) -> np.ndarray:
        """Index coordinates ``(..., 3)`` in **(i, j, k) = (x, y, z)** order → LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction_matrix * np.asarray(self.spacing)[None, :]).T + np.asarray(self.origin)

    def world_to_index(self, lps: np.ndarray | Sequence[float]) -> np.ndarray:
        """LPS mm ``(..., 3)`` → continuous index ``(..., 3)`` in (i, j, k) = (x, y, z) order."""
        lps = np.asarray(lps, dtype=float) - np.asarray(self.origin)
        return (lps @ self.direction_matrix) / np.asarray(self.spacing)

    # ------------------------------------------------------------ comparisons
    def _tolerances(self, atol: float | None, voxel_fraction: float) -> tuple[float, float]:
        """(length tolerance in mm, direction tolerance): absolute when ``atol`` is given, else a
        fraction of the smallest voxel — the same rule for 1 mm MRI and 5 nm EM grids."""
        if atol is not None:
            return atol, atol
        return voxel_fraction * min(self.spacing), 1e-4  # direction cosines: float32 headers hold ~1e-7

    def almost_equal(self, other: Geometry, atol: float | None = None, voxel_fraction: float = 1e-3) -> bool:
        """True when both grids place every voxel at the same position.

        Args:
            other: geometry to compare with.
            atol: absolute tolerance (mm for spacing/origin, unitless for direction). When None
                (default) the tolerance is ``voxel_fraction`` of the smallest voxel size, so the
                comparison means the same for any unit scale (NIfTI keeps geometry as float32).
            voxel_fraction: see ``atol``.
        """
        return not self.describe_difference(other, atol, voxel_fraction)

    def describe_difference(self, other: Geometry, atol: float | None = None, voxel_fraction: float = 1e-3) -> str:
        """One-line human description of how two geometries differ ('' when equal within tolerance)."""
        length_tol, direction_tol = self._tolerances(atol, voxel_fraction)
        parts = []
        for name in ("spacing", "origin"):
            a, b = getattr(self, name), getattr(other, name)
            if not np.allclose(a, b, rtol=0, atol=length_tol):
                parts.append(f"{name} {_fmt(a)} vs {_fmt(b)}")
        if not np.allclose(self.direction_matrix, other.direction_matrix, rtol=0, atol=direction_tol):
            parts.append(f"direction {_fmt(self.direction_matrix.ravel())} vs {_fmt(other.direction_matrix.ravel())}")
        return "; ".join(parts)

    # ---------------------------------------------------------- constructors
    @classmethod
    def from_affine_lps(cls, affine: np.ndarray) -> Geometry:
        """Inverse of :meth:`affine_lps` (affine must be orthogonal up to column scaling)."""
        affine = np.asarray(affine, dtype=float)
        linear = affine[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        return cls(spacing=tuple(spacing), origin=tuple(affine[:3, 3]), direction=tuple(map(tuple, linear / spacing)))

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray) -> Geometry:
        """Geometry from a NIfTI-style RAS affine (e.g. ``nibabel`` ``img.affine``)."""
        affine = np.array(affine, dtype=float)
        affine[:3, :] = _LPS_TO_RAS @ affine[:3, :]
        return cls.from_affine_lps(affine)

    # ------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": [list(row) for row in self.direction]}

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(spacing=data["spacing"], origin=data["origin"], direction=data["direction"])

    def to_json(self) -> str:
        # repr-precision floats: json round-trips Python floats exactly.
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Geometry:
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------ operations
    def with_flipped_axis(self, axis_xyz: int, size: int) -> Geometry:
        """Geometry of the same voxels after reversing index axis ``axis_xyz`` (0=x,1=y,2=z) of length ``size``."""
        ijk = np.zeros(3)
        ijk[axis_xyz] = size - 1
        direction = self.direction_matrix.copy()
        direction[:, axis_xyz] *= -1
        return Geometry(self.spacing, tuple(self.index_to_world(ijk)), tuple(map(tuple, direction)))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
