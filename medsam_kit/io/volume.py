"""The :class:`Volume` type returned by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medsam_kit.io.geometry import Geometry


@dataclass
class Volume:
    """An image array and its placement in the world.

    Attributes:
        array: ``(Z, Y, X)`` for scalar images or ``(C, Z, Y, X)`` for multi-channel / vector /
            time-series images (channels or frames first). 2D images are ``(1, Y, X)``.
        geometry: spacing / origin / direction of the ``(Z, Y, X)`` grid (LPS, see
            :mod:`medsam_kit.io.geometry`).
        meta: format details worth keeping. Every reader sets ``format`` and ``stored_geometry``
            (False when the file held no spacing and the identity grid was assumed: plain TIFF,
            PNG or HDF5 files from other tools), plus e.g. the DICOM modality or HDF5 key.
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be (Z, Y, X) or (C, Z, Y, X), got shape {self.array.shape}")

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` size of the grid."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else self.array.shape[0]
