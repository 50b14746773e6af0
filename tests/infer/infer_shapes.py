"""Shapes for inference tests (a module with a unique name: ``from conftest import ...`` breaks when
several test folders, each with its own conftest.py, run in one pytest session)."""

from __future__ import annotations

import numpy as np


def sphere(shape_zyx, centre_zyx, radius_zyx) -> np.ndarray:
    """Bool ellipsoid mask ``(Z, Y, X)``."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape_zyx)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_zyx, radius_zyx, strict=True)) <= 1.0
