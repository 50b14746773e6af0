"""Multi-page TIFF stacks (EM: Lucchi/EPFL, Kasthuri) and single TIFF slices through tifffile.

Geometry is kept in the JSON image description that tifffile writes ("shaped" metadata).
Stacks from other tools carry no world geometry: the X/Y resolution tags with their unit (TIFF
ResolutionUnit or ImageJ ``unit``) and ImageJ ``spacing`` give the spacing in mm when present;
otherwise the identity grid is returned with ``meta["stored_geometry"] = False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.validate import check_volume_size
from medsam_kit.io.volume import Volume

_GEOMETRY_KEY = "medsam_kit_geometry"


# Length units of ImageJ's ``unit`` field and TIFF ResolutionUnit codes, in mm.
_UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0, "inch": 25.4, "in": 25.4,
            "micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00b5m": 1e-3, "nm": 1e-6,
            "nanometer": 1e-6}
# TIFF ResolutionUnit 3 = centimetre. Inch (2) is left out on purpose: it is a print resolution
# (72/96/300 dpi written by default by many tools), not a physical voxel size.
_RESOLUTION_UNIT_MM = {3: 10.0}


def _fallback_geometry(tif: tifffile.TiffFile) -> Geometry | None:
    """Spacing from the X/Y resolution tags (pixels per unit) and ImageJ's ``spacing`` (z), in mm.

    Returns None unless both in-plane resolutions and their unit are known: a guess in the wrong
    unit would make every distance metric wrong, while None lets the caller apply a dataset default.
    """
    page = tif.pages.first
    imagej = tif.imagej_metadata or {}
    unit_mm = _UNIT_MM.get(str(imagej.get("unit", "")).strip().lower())
    if unit_mm is None and "ResolutionUnit" in page.tags:
        unit_mm = _RESOLUTION_UNIT_MM.get(int(page.tags["ResolutionUnit"].value))
    if unit_mm is None:
        return None
    try:
        xy = []
        for tag_name in ("XResolution", "YResolution"):
            num, den = page.tags[tag_name].value
            xy.append(den / num * unit_mm)
        z = float(imagej["spacing"]) * unit_mm if "spacing" in imagej else xy[0]  # no z: assume isotropic
        return Geometry(spacing=(xy[0], xy[1], z))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def read(path: Path) -> Volume:
    with tifffile.TiffFile(path) as tif:
        if tif.series:  # the declared size, checked before tifffile allocates it
            check_volume_size(tif.series[0].shape, tif.series[0].dtype.itemsize, path)
        array = tif.asarray()
        meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        geometry = Geometry.from_json(meta[_GEOMETRY_KEY]) if _GEOMETRY_KEY in meta else _fallback_geometry(tif)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4) and tif_is_rgb(path):
        array = np.moveaxis(array, -1, 0)[:, None]  # one RGB(A) slice -> (C, 1, Y, X)
    return Volume(array, geometry or Geometry(), {"format": "tiff", "stored_geometry": geometry is not None})


def tif_is_rgb(path: Path) -> bool:
    with tifffile.TiffFile(path) as tif:
        return tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB


def write(path: Path, volume: Volume) -> None:
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    tifffile.imwrite(path, array, metadata={_GEOMETRY_KEY: volume.geometry.to_json()}, photometric="minisblack")


def read_slice(path: Path) -> tuple[np.ndarray, Geometry | None]:
    """A single 2D TIFF image as ``(Y, X)`` (``(C, Y, X)`` for RGB) and its stored geometry, if any."""
    volume = read(path)
    if volume.spatial_shape[0] != 1:
        raise ValueError(f"{path}: expected one 2D slice, found a stack of {volume.spatial_shape[0]}")
    array = volume.array[0] if volume.array.ndim == 3 else volume.array[:, 0]
    stored = volume.geometry if volume.meta.get("stored_geometry") else None
    return array, stored
