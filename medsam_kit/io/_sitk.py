"""NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK, which works in LPS like this package."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.integrity import drain_gzip, verify_compressed
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


def _nifti_voxels(path: Path) -> np.ndarray:
    """nibabel's voxel array, ``(X, Y, Z[, T])``; a ``.nii.gz`` is read to its end to check its CRC.

    nibabel stops reading a gzip stream at the last voxel, so the trailer (CRC-32 and length) is never
    checked and a flipped bit reads as different voxels. Reading through our own gzip stream and then
    draining it checks the trailer in the same pass (one inflation, not two).
    """
    import nibabel

    if not path.name.lower().endswith(".gz"):
        return np.asanyarray(nibabel.load(path).dataobj)
    with gzip.open(path, "rb") as stream:
        first = stream.read(4)
        stream.seek(0)
        image_class = nibabel.Nifti2Image if 540 in {int.from_bytes(first, o) for o in ("little", "big")} \
            else nibabel.Nifti1Image
        image = image_class.from_stream(stream)
        array = np.asanyarray(image.dataobj)
        # A NIfTI file ends with its voxels; allow some padding, not a bomb.
        drain_gzip(stream, path, limit=max(1 << 20, array.nbytes))
    return array


def _read_nifti(path: Path) -> Volume:
    """NIfTI: geometry from ITK's header reader, voxels from nibabel.

    ITK's NIfTI reader (5.4) silently turns NaN/Inf into 0 and zero-fills truncated files, so a
    half-copied or NaN-holding scan would read as plausible data. nibabel keeps non-finite
    values and raises on truncation; ITK stays the source of geometry so every format shares
    ITK's LPS conventions (sform/qform choice included).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetNumberOfComponents() > 1 or reader.GetDimension() > 4:
        verify_compressed(path, None)  # ITK does not check the gzip CRC either
        return _read_with_sitk(path)  # vector NIfTI (intent codes): rare, ITK handles the layout
    try:
        array = _nifti_voxels(path)
    except (EOFError, OSError, zlib.error) as exc:
        if path.name.lower().endswith(".gz"):
            verify_compressed(path, None)  # a corrupt stream explains it: say so
        raise ValueError(f"{path}: truncated or corrupt NIfTI ({str(exc).splitlines()[0]}); re-copy or re-export it") \
            from exc
    array = np.ascontiguousarray(array.T)  # nibabel (X, Y, Z[, T]) -> (([T,] Z, Y, X)
    itk_dtype = sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype
    if array.dtype != itk_dtype and np.can_cast(array.dtype, itk_dtype, "same_kind"):
        array = array.astype(itk_dtype)  # scl_slope scaling: use the pixel type ITK chose
    shape, geometry = header_info(reader)
    if array.shape != shape:
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{path}: voxel array {array.shape} does not match header size {shape}")
        array = array.reshape(shape)  # (X, Y, Z, 1[, 1]) files: ITK drops trailing unit axes, so do we
    return Volume(array, geometry, {"format": "nifti", "pixel_type": str(array.dtype), "stored_geometry": True})


def header_info(reader: sitk.ImageFileReader) -> tuple[tuple[int, ...], Geometry]:
    """Array shape (``(Z, Y, X)``, ``(1, Y, X)`` for 2D, channels/frames first) and geometry from a
    reader on which ``ReadImageInformation()`` was called — without reading pixels."""
    dim = reader.GetDimension()
    shape = tuple(reader.GetSize())[::-1]
    if dim == 2:
        shape = (1, *shape)
    if reader.GetNumberOfComponents() > 1:
        shape = (reader.GetNumberOfComponents(), *shape)
    header = sitk.Image([1] * dim, sitk.sitkUInt8)
    header.SetSpacing(reader.GetSpacing())
    header.SetOrigin(reader.GetOrigin())
    header.SetDirection(reader.GetDirection())
    return shape, geometry_from_image(header)


def _read_with_sitk(path: Path) -> Volume:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)  # (Z,Y,X,C) -> (C,Z,Y,X)
    return Volume(array, geometry_from_image(image),
                  {"format": "sitk", "pixel_type": image.GetPixelIDTypeAsString(), "stored_geometry": True})


def read(path: Path) -> Volume:
    if path.name.lower().endswith((".nii", ".nii.gz")):
        return _read_nifti(path)
    return _read_with_sitk(path)


def write(path: Path, volume: Volume, vector: bool, compress: bool = True) -> None:
    image = image_from_array(volume.array, volume.geometry, vector=vector)
    sitk.WriteImage(image, str(path), useCompression=compress)
