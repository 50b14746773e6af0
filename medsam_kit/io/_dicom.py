"""DICOM series (one file per slice in a folder) through SimpleITK / GDCM."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam_kit.io._sitk import geometry_from_image
from medsam_kit.io.geometry import Geometry
from medsam_kit.io.volume import Volume

# DICOM stores integers; writing floats would need a rescale slope that breaks exact round trips.
_DICOM_DTYPES = {np.dtype("int16"), np.dtype("uint16"), np.dtype("uint8")}
_UID_ROOT = "1.2.826.0.1.3680043.2.1125"  # a commonly used example root for generated UIDs


def series_ids(folder: Path) -> list[str]:
    """DICOM series instance UIDs found directly in ``folder``."""
    if not any(p.suffix.lower() in ("", ".dcm", ".ima") for p in folder.iterdir() if p.is_file()):
        return []  # skip GDCM's scan (and its warning) for folders of PNG/TIFF slices
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)


def read(folder: Path, series_id: str | None = None) -> Volume:
    ids = series_ids(folder)
    if not ids:
        raise ValueError(f"{folder}: no DICOM series found in this folder")
    if series_id is None:
        if len(ids) > 1:
            raise ValueError(f"{folder}: {len(ids)} DICOM series found; pass series_id= one of {ids}")
        series_id = ids[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    return Volume(sitk.GetArrayFromImage(image), geometry_from_image(image),
                  {"format": "dicom", "modality": modality, "series_id": series_id, "stored_geometry": True})


def _ds(value: float) -> str:
    """DICOM decimal string (max 16 characters) keeping as many digits as fit."""
    for digits in range(16, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(value)


def write(folder: Path, volume: Volume, modality: str = "OT") -> None:
    """Write a scalar integer volume as one DICOM file per Z slice into ``folder`` (must exist).

    DICOM derives the slice axis from the cross product of the row and column directions, so a
    left-handed grid is written with its Z axis reversed: the voxels land at the same world
    positions, and reading back gives the equivalent right-handed grid.
    """
    array, geometry = volume.array, volume.geometry
    if array.ndim != 3:
        raise ValueError(f"DICOM series writing needs a scalar (Z, Y, X) volume, got shape {array.shape}")
    if array.dtype not in _DICOM_DTYPES:
        raise TypeError(f"DICOM series writing supports {sorted(map(str, _DICOM_DTYPES))}, got {array.dtype}; "
                        "cast (e.g. CT in HU to int16) or use NIfTI/NRRD for floats")
    if not geometry.is_right_handed:
        geometry = geometry.with_flipped_axis(2, array.shape[0])
        array = array[::-1]
    direction = geometry.direction_matrix
    stamp = f"{time.time_ns()}"
    study_uid, series_uid = f"{_UID_ROOT}.1.{stamp}", f"{_UID_ROOT}.2.{stamp}"
    orientation = "\\".join(_ds(v) for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[k]))
        image.SetSpacing(geometry.spacing[:2])  # the writer fills Pixel Spacing from the image
        position = geometry.index_to_world([0.0, 0.0, float(k)])
        tags = {
            "0008|0060": modality,
            # CT / MR Image Storage, so that readers take Pixel Spacing (0028,0030) as physical spacing.
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(_ds(v) for v in position),
            "0020|0037": orientation,
            "0018|0050": _ds(geometry.spacing[2]),
            "0018|0088": _ds(geometry.spacing[2]),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(image)


def geometry_tolerance() -> float:
    """Absolute tolerance of DICOM geometry round trips (16-character decimal strings)."""
    return 1e-4


__all__ = ["Geometry", "read", "series_ids", "write", "geometry_tolerance"]
