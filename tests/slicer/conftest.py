"""Fixtures for the 3D Slicer extension's tests (slicer/MedSAMKit), which run without Slicer.

``MedSAMKitLib`` is imported the way Slicer imports it: with the module folder on ``sys.path``.
``MedSAMKit.py`` itself needs Slicer's ``slicer``/``vtk``/``qt``/``ctk`` modules; the ``medsamkit``
fixture installs the stand-ins of ``slicer_stubs.py`` for the duration of a test module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer" / "MedSAMKit"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def oblique_ijk_to_ras(angle_deg: float = 30.0, tilt: float = 0.2) -> np.ndarray:
    """IJKToRAS of an oblique grid: rotated about S and tilted, anisotropic 0.8 x 0.9 x 2.5 mm, off-centre."""
    a = np.deg2rad(angle_deg)
    rotate = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    tilt_x = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(tilt), -np.sin(tilt)], [0.0, np.sin(tilt), np.cos(tilt)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotate @ tilt_x @ np.diag([0.8, 0.9, 2.5])
    matrix[:3, 3] = [-12.5, 40.25, 31.0]
    return matrix


@pytest.fixture
def oblique():
    return oblique_ijk_to_ras()


@pytest.fixture(scope="module")
def medsamkit():
    """The ``MedSAMKit`` module imported over stand-in Slicer modules (removed again after the test module)."""
    import slicer_stubs

    previous = slicer_stubs.install()
    sys.modules.pop("MedSAMKit", None)
    try:
        import MedSAMKit

        yield MedSAMKit
    finally:
        sys.modules.pop("MedSAMKit", None)
        slicer_stubs.uninstall(previous)


@pytest.fixture
def scene(medsamkit):
    """The stand-in MRML scene, emptied."""
    import slicer_stubs

    slicer_stubs.SCENE.Clear()
    slicer_stubs.SCENE.removed.clear()
    return slicer_stubs.SCENE
