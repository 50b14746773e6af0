"""2D PNG slices through Pillow. Geometry is kept in a ``tEXt`` chunk (PNG has no spacing field)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.volume import Volume

_GEOMETRY_KEY = "medsam_kit_geometry"


def read_slice(path: Path) -> tuple[np.ndarray, Geometry | None]:
    """``(Y, X)`` grayscale or ``(C, Y, X)`` colour array, and the stored geometry if any."""
    with Image.open(path) as image:
        text = image.text.get(_GEOMETRY_KEY) if hasattr(image, "text") else None
        array = np.array(image)
    if array.ndim == 3:
        array = np.moveaxis(array, -1, 0)
    return array, (Geometry.from_json(text) if text else None)


def read(path: Path) -> Volume:
    array, geometry = read_slice(path)
    array = array[None] if array.ndim == 2 else array[:, None]
    return Volume(array, geometry or Geometry(), {"format": "png", "stored_geometry": geometry is not None})


def write(path: Path, volume: Volume) -> None:
    array = volume.array
    if array.ndim == 4:
        if array.shape[1] != 1 or array.shape[0] not in (3, 4):
            raise ValueError(f"PNG holds one grayscale or RGB(A) slice; got shape {array.shape}")
        array = np.moveaxis(array[:, 0], 0, -1)
    elif array.shape[0] != 1:
        raise ValueError(f"PNG holds one slice; got {array.shape[0]} slices (write a slice folder instead)")
    else:
        array = array[0]
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG stores uint8 or uint16 pixels, got {array.dtype}; use TIFF or NIfTI for other types")
    info = PngImagePlugin.PngInfo()
    info.add_text(_GEOMETRY_KEY, volume.geometry.to_json())
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", pnginfo=info)
