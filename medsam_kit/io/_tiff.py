"""Multi-page TIFF stacks (EM: Lucchi/EPFL, Kasthuri) and single TIFF slices through tifffile.

Geometry is kept in the JSON image description that tifffile writes ("shaped" metadata).
Stacks from other tools carry no world geometry: ImageJ ``spacing`` and the X/Y resolution
tags are used when present, otherwise spacing 1 and identity direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.volume import Volume

_GEOMETRY_KEY = "medsam_kit_geometry"


def _fallback_geometry(tif: tifffile.TiffFile) -> Geometry:
    page = tif.pages.first
    spacing = [1.0, 1.0, 1.0]
    try:
        for axis, tag_name in ((0, "XResolution"), (1, "YResolution")):
            tag = page.tags.get(tag_name)
            if tag is not None:
                num, den = tag.value
                # Resolution in pixels per unit; only trust it when a unit (inch/cm) is declared.
                if num and den and page.tags.get("ResolutionUnit") and page.tags["ResolutionUnit"].value != 1:
                    spacing[axis] = den / num
        if tif.imagej_metadata and "spacing" in tif.imagej_metadata:
            spacing[2] = float(tif.imagej_metadata["spacing"])
    except (TypeError, ValueError, ZeroDivisionError):
        spacing = [1.0, 1.0, 1.0]
    return Geometry(spacing=tuple(spacing))


def read(path: Path) -> Volume:
    with tifffile.TiffFile(path) as tif:
        array = tif.asarray()
        meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        stored = _GEOMETRY_KEY in meta
        if stored:
            geometry = Geometry.from_json(meta[_GEOMETRY_KEY])
        else:
            geometry = _fallback_geometry(tif)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4) and tif_is_rgb(path):
        array = np.moveaxis(array, -1, 0)[:, None]  # one RGB(A) slice -> (C, 1, Y, X)
    return Volume(array, geometry, {"format": "tiff", "stored_geometry": stored})


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
