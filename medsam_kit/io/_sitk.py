"""NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK, which works in LPS like this package."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.volume import Volume

# Pixel types SimpleITK writes for each numpy dtype (bool is stored as uint8).
_SUPPORTED = {np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                                    "float32", "float64")}


def geometry_from_image(image: sitk.Image) -> Geometry:
    """Spatial (first three axes) geometry of a 2D/3D/4D SimpleITK image."""
    dim = image.GetDimension()
    spacing = list(image.GetSpacing())[:3]
    origin = list(image.GetOrigin())[:3]
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    if dim == 2:
        spacing += [1.0]
        origin += [0.0]
        d3 = np.eye(3)
        d3[:2, :2] = direction[:2, :2]
        direction = d3
    return Geometry(tuple(spacing), tuple(origin), tuple(map(tuple, direction)))


def image_from_array(array: np.ndarray, geometry: Geometry, vector: bool) -> sitk.Image:
    """SimpleITK image from a ``(Z,Y,X)`` or ``(C,Z,Y,X)`` array.

    ``vector=True`` stores C as pixel components (NRRD/MHA); otherwise a 4D array becomes a 4D
    image with C as the slowest axis (NIfTI time series, e.g. ACDC ``_4d`` files).
    """
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype not in _SUPPORTED:
        raise TypeError(f"cannot write arrays of dtype {array.dtype}; use one of {sorted(map(str, _SUPPORTED))}")
    if array.ndim == 4 and vector:
        image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)
        dim = 3
    else:
        image = sitk.GetImageFromArray(array, isVector=False)
        dim = array.ndim
    spacing, origin, direction = list(geometry.spacing), list(geometry.origin), geometry.direction_matrix
    if dim == 4:
        spacing.append(1.0)
        origin.append(0.0)
        d4 = np.eye(4)
        d4[:3, :3] = direction
        direction = d4
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(direction.reshape(-1)))
    return image


def _check_nifti_complete(path: Path) -> None:
    """Raise ValueError for a truncated NIfTI file.

    ITK's NIfTI reader zero-fills missing bytes without an error, so a half-copied scan would
    silently read as a half-black volume. For ``.nii.gz`` the gzip stream must reach its end
    marker; for ``.nii`` the file must hold header + all voxels.
    """
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{path}: truncated or corrupt gzip stream ({exc})") from exc
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    itemsize = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(),
                                                              reader.GetPixelID())).dtype).itemsize
    with open(path, "rb") as f:
        header = f.read(352)
    vox_offset = int(np.frombuffer(header[108:112], "<f4")[0]) if len(header) >= 112 else 352
    if vox_offset <= 0 or vox_offset > 1e6:  # big-endian or odd header; fall back to the minimum
        vox_offset = 352
    if path.stat().st_size < vox_offset + voxels * itemsize:
        raise ValueError(f"{path}: truncated file ({path.stat().st_size} bytes, header says "
                         f"{vox_offset + voxels * itemsize}); re-copy or re-export it")


def read(path: Path) -> Volume:
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)  # (Z,Y,X,C) -> (C,Z,Y,X)
    return Volume(array, geometry_from_image(image), {"format": "sitk", "pixel_type": image.GetPixelIDTypeAsString()})


def write(path: Path, volume: Volume, vector: bool, compress: bool = True) -> None:
    image = image_from_array(volume.array, volume.geometry, vector=vector)
    sitk.WriteImage(image, str(path), useCompression=compress)
