"""Read and write volumes with their geometry.

Every reader returns a :class:`Volume`: ``array`` in ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) order
and a :class:`Geometry` in ITK/LPS convention (spacing and origin in ``(x, y, z)`` order; see
:mod:`medsam_kit.io.geometry`). Writers keep geometry and write atomically (temporary file,
then rename), so an interrupted write never leaves a half file under the final name.

Formats, chosen from the path:

=====================  ======================  =============================================
path                   format                  notes
=====================  ======================  =============================================
``*.nii``, ``*.nii.gz``  NIfTI (SimpleITK)     geometry stored as float32 by the format
``*.nrrd``, ``*.nhdr``   NRRD (SimpleITK)      C-channel arrays as vector pixels
``*.mha``, ``*.mhd``     MetaImage (SimpleITK)
``*.tif``, ``*.tiff``    TIFF stack (tifffile) geometry in the JSON description
``*.png``                2D PNG (Pillow)       one slice; geometry in a tEXt chunk
``*.h5``, ``*.hdf5``     HDF5 (h5py)           ``key`` selects the dataset
folder                   DICOM series, or      DICOM when the folder holds a series;
                         PNG/TIFF slices       otherwise 2D slices stacked in natural order
=====================  ======================  =============================================

Reading is guarded against crafted and damaged files: NIfTI / NRRD / MetaImage headers are checked
before ITK sees them (:mod:`medsam_kit.io.validate`: axis count, sizes, bytes), declared sizes of
every format that states one are held to :func:`max_volume_bytes` (``MEDSAM_MAX_VOLUME_BYTES``,
default 16 GiB), and compressed voxels are checked against their checksum
(:mod:`medsam_kit.io.integrity`). :func:`check_intensities` is the shared check of voxel values
(real, finite, within float32) for code that feeds a model.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from medsam_kit.io import _dicom, _hdf5, _png, _sitk, _tiff
from medsam_kit.io.atomic import atomic_dir, atomic_path, atomic_write_text, publish_mode
from medsam_kit.io.geometry import Geometry
from medsam_kit.io.headers import detached_data_names
from medsam_kit.io.integrity import verify_compressed
from medsam_kit.io.validate import VolumeTooLargeError, check_file_header, check_intensities, max_volume_bytes
from medsam_kit.io.volume import Volume

__all__ = [
    "Geometry", "Volume", "read_volume", "write_volume", "volume_format", "strip_volume_suffix",
    "VOLUME_SUFFIXES", "atomic_path", "atomic_dir", "atomic_write_text", "read_image_header",
    "check_intensities", "max_volume_bytes", "VolumeTooLargeError",
]

_FORMATS = {
    ".nii.gz": "nifti", ".nii": "nifti", ".seg.nrrd": "nrrd", ".nrrd": "nrrd", ".nhdr": "nrrd",
    ".mha": "mha", ".mhd": "mha", ".tif": "tiff", ".tiff": "tiff", ".png": "png",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
}
#: File suffixes recognised as single-file volumes (longest first).
VOLUME_SUFFIXES = tuple(sorted(_FORMATS, key=len, reverse=True))
_SLICE_SUFFIXES = (".png", ".tif", ".tiff")
_FOLDER_FORMATS = ("dicom", "png-slices", "tiff-slices")


def volume_format(path: str | os.PathLike) -> str:
    """Format name for ``path`` ('nifti', 'nrrd', 'mha', 'tiff', 'png', 'hdf5', or 'folder')."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return _FORMATS[suffix]
    raise ValueError(f"{path}: unknown volume format; expected one of {', '.join(VOLUME_SUFFIXES)} or a folder")


def strip_volume_suffix(name: str) -> str:
    """'case_001.nii.gz' -> 'case_001' (case ids are file names without a volume suffix)."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _natural_key(path: Path) -> list:
    # ASCII digits only: "²" is a digit to str.isdigit but not to int()
    return [int(t) if t.isascii() and t.isdigit() else t.lower() for t in re.split(r"([0-9]+)", path.name)]


def _read_slice_folder(folder: Path) -> Volume:
    # Hidden files (e.g. macOS "._im0001.png" resource forks) are not slices.
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in _SLICE_SUFFIXES and not p.name.startswith(".")),
                   key=_natural_key)
    if not files:
        raise ValueError(f"{folder}: folder holds neither a DICOM series nor PNG/TIFF slices")
    slices, geometry = [], None
    for file in files:
        reader = _png.read_slice if file.suffix.lower() == ".png" else _tiff.read_slice
        array, stored = reader(file)
        geometry = geometry or stored
        if slices and array.shape != slices[0].shape:
            raise ValueError(f"{file}: slice shape {array.shape} differs from {files[0].name} {slices[0].shape}")
        slices.append(array)
    stack = np.stack(slices, axis=-3)  # (Z, Y, X) or (C, Z, Y, X)
    return Volume(stack, geometry or Geometry(),
                  {"format": "slices", "files": len(files), "stored_geometry": geometry is not None})


def read_volume(path: str | os.PathLike, key: str | None = None) -> Volume:
    """Read a volume and its geometry.

    Args:
        path: a file of a supported format, a DICOM series folder or a folder of 2D slices.
        key: HDF5 dataset name (needed when the file holds several datasets), or DICOM series UID.

    Returns:
        :class:`Volume` with ``array`` ``(Z, Y, X)`` or ``(C, Z, Y, X)`` and LPS geometry.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unknown format or an unreadable/corrupt file (message names the file): a header
            ITK cannot safely read (checked before ITK sees it), more bytes than
            :func:`max_volume_bytes` (:class:`VolumeTooLargeError`), compressed data failing its
            checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    fmt = volume_format(path)
    try:
        if fmt == "folder":
            if _dicom.series_ids(path):
                return _dicom.read(path, key)
            return _read_slice_folder(path)
        if fmt in ("nifti", "nrrd", "mha"):
            header = check_file_header(path, fmt)
            if header is not None:
                verify_compressed(path, header)  # NIfTI: checked while nibabel reads it
            return _sitk.read(path)
        if fmt == "tiff":
            return _tiff.read(path)
        if fmt == "png":
            return _png.read(path)
        return _hdf5.read(path, key)
    except (KeyError, FileNotFoundError):
        raise
    except Exception as exc:  # corrupt/truncated files raise many library-specific types
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise  # already names the file
        if fmt == "nifti":
            verify_compressed(path, None)  # a failed gzip check explains the failure better
        raise ValueError(f"{path}: cannot read as {fmt}: {_short_error(exc)}; is the file complete?") from exc


def _short_error(exc: Exception) -> str:
    """One readable line from a library exception (ITK puts the useful part after a source location)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
    line = next((ln for ln in lines if "ERROR" in ln), lines[0])
    line = re.sub(r"\w+\(0x[0-9a-f]+\): ", "", line.split("ITK ERROR: ")[-1])
    return line[:200]


def read_image_header(path: str | os.PathLike) -> tuple[tuple[int, ...], Geometry] | None:
    """Shape (as :func:`read_volume` would return it) and geometry, without reading pixels.

    Only for SimpleITK formats (NIfTI/NRRD/MHA); returns None for others (read them instead).

    Raises:
        ValueError: a header ITK cannot safely read, or more bytes than :func:`max_volume_bytes`
            (:class:`VolumeTooLargeError`); messages name the file.
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = volume_format(path)
    if fmt not in ("nifti", "nrrd", "mha"):
        return None
    try:
        check_file_header(path, fmt)
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or a corrupt .nii.gz stream
        raise ValueError(f"{path}: cannot read header: {_short_error(exc)}") from exc
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if fmt == "nifti":
            verify_compressed(path, None)  # a failed gzip check explains the failure better
        raise ValueError(f"{path}: cannot read header: {_short_error(exc)}") from exc
    return _sitk.header_info(reader)


def write_volume(path: str | os.PathLike, volume: Volume, *, key: str = "main", folder_format: str | None = None,
                 compress: bool = True) -> Path:
    """Write ``volume`` to ``path`` atomically, keeping its geometry.

    Args:
        path: destination; the suffix picks the format. A path without a volume suffix is a
            folder and needs ``folder_format``.
        volume: the :class:`Volume` to write (``(Z, Y, X)`` or ``(C, Z, Y, X)``).
        key: HDF5 dataset name.
        folder_format: 'dicom' (integer scalar volumes), 'png-slices' or 'tiff-slices'.
        compress: gzip/zlib compression where the format supports it.

    Returns:
        The final path.
    """
    path = Path(path)
    if folder_format is not None:
        if folder_format not in _FOLDER_FORMATS:
            raise ValueError(f"folder_format must be one of {_FOLDER_FORMATS}, got {folder_format!r}")
        with atomic_dir(path) as tmp:
            if folder_format == "dicom":
                _dicom.write(tmp, volume, modality=volume.meta.get("modality") or "OT")
            else:
                suffix = ".png" if folder_format == "png-slices" else ".tif"
                writer = _png.write if suffix == ".png" else _tiff.write
                array = volume.array
                for k in range(volume.spatial_shape[0]):
                    slab = array[k:k + 1] if array.ndim == 3 else array[:, k:k + 1]
                    writer(tmp / f"slice_{k:04d}{suffix}", Volume(slab, volume.geometry))
        return path
    fmt = volume_format(path) if path.suffix else None
    if fmt is None or fmt == "folder":
        raise ValueError(f"{path}: give a file suffix ({', '.join(VOLUME_SUFFIXES)}) or folder_format=")
    if path.name.lower().endswith((".mhd", ".nhdr")):
        _write_detached_header(path, volume, compress)
        return path
    with atomic_path(path) as tmp:
        if fmt in ("nifti", "nrrd", "mha"):
            _sitk.write(tmp, volume, vector=fmt != "nifti", compress=compress)
        elif fmt == "tiff":
            _tiff.write(tmp, volume)
        elif fmt == "png":
            _png.write(tmp, volume)
        else:
            _hdf5.write(tmp, volume, key=key)
    return path


def _write_detached_header(path: Path, volume: Volume, compress: bool) -> None:
    """MHD/NHDR keep pixels in a second file named in the header.

    Both are written in a temporary folder; the data file moves into place first and the header
    last, so the header never names a missing file. When overwriting, the data file gets a new
    unique name (the old header keeps pointing at the old, intact data until the header swap),
    and the old data file is removed afterwards (only a data file named as this writer names them).
    """
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    old_data = detached_data_names(path) if path.exists() else set()
    stem = f"{path.stem}.{os.urandom(4).hex()}" if path.exists() else path.stem
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        header = tmp / f"{stem}{path.suffix}"
        _sitk.write(header, volume, vector=True, compress=compress)
        for file in tmp.iterdir():
            if file != header:
                publish_mode(file)
                os.replace(file, path.parent / file.name)
        publish_mode(header)
        os.replace(header, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    referenced = detached_data_names(path)
    # Only data files this writer made for this header: the old header may name any file (another
    # volume's data, an input), and overwriting a header must never delete that.
    ours = re.compile(rf"{re.escape(path.stem)}(\.[0-9a-f]{{8}})?\.(raw|zraw|raw\.gz)")
    for name in old_data - referenced:
        if ours.fullmatch(name):
            (path.parent / name).unlink(missing_ok=True)
