"""Checks made before a reader runs (header shape and size) and after (voxel values).

* :func:`check_file_header`: the shape a NIfTI / NRRD / MetaImage header declares, checked before
  any ITK call. ITK trusts headers: a 100-byte NRRD declaring ``dimension: 12`` kills the Python
  process (SimpleITK 2.5 segfaults for 11–16 dimensions) and a NIfTI declaring ``32767³`` voxels
  makes it allocate 32 TiB.
* :func:`check_volume_size`: the bound on a volume's bytes (:func:`max_volume_bytes`, set with the
  ``MEDSAM_MAX_VOLUME_BYTES`` environment variable), shared by every reader that can see the shape
  before reading (ITK formats, HDF5).
* :func:`check_intensities`: the voxel values a model can take (real, finite, within float32).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsam_kit.io.headers import TextHeader, read_text_header

#: Default bound on the bytes of one volume as stored (voxels x element size): far above any CT/MR/EM
#: volume this package handles in memory, far below what a crafted header can declare.
MAX_VOLUME_BYTES = 16 * 2**30
#: Environment variable that overrides :data:`MAX_VOLUME_BYTES` (a byte count).
MAX_VOLUME_BYTES_ENV = "MEDSAM_MAX_VOLUME_BYTES"

MAX_NRRD_DIMENSION = 5  # (Z, Y, X), one frame axis and one channel / vector axis
MAX_METAIMAGE_DIMENSION = 4  # channels are ElementNumberOfChannels, not an axis
MAX_NIFTI_DIMENSION = 5  # ITK's limit, after it drops trailing unit axes

_METAIMAGE_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


class VolumeTooLargeError(ValueError):
    """A volume whose declared size is over :func:`max_volume_bytes` (a :class:`ValueError`).

    Attributes:
        shape: the declared shape, in the file's own axis order (NIfTI / NRRD / MetaImage: fastest axis first).
        nbytes: voxels x element size.
    """

    def __init__(self, message: str, shape: Sequence[int], nbytes: int) -> None:
        super().__init__(message)
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = int(nbytes)


def max_volume_bytes() -> int:
    """The bound on a volume's bytes: ``$MEDSAM_MAX_VOLUME_BYTES`` if set, else :data:`MAX_VOLUME_BYTES`."""
    value = os.environ.get(MAX_VOLUME_BYTES_ENV, "").strip()
    if not value:
        return MAX_VOLUME_BYTES
    try:
        bound = int(value)
    except ValueError:
        bound = 0
    if bound <= 0:
        raise ValueError(f"{MAX_VOLUME_BYTES_ENV}={value!r} is not a positive byte count; set it to e.g. "
                         f"{MAX_VOLUME_BYTES} (16 GiB) or unset it")
    return bound


def check_volume_size(shape: Sequence[int], itemsize: int, source: str | os.PathLike) -> int:
    """Refuse a volume of ``shape`` x ``itemsize`` bytes over :func:`max_volume_bytes`.

    Returns:
        The byte count (Python integers: no overflow for any declared shape).

    Raises:
        VolumeTooLargeError: over the bound; the message names ``source``.
    """
    nbytes = math.prod(int(s) for s in shape) * int(itemsize)
    bound = max_volume_bytes()
    if nbytes > bound:
        raise VolumeTooLargeError(
            f"{source}: declares {list(map(int, shape))} voxels of {itemsize} byte(s) = {nbytes / 2**30:.1f} GiB, "
            f"over the bound of {bound / 2**30:.1f} GiB per volume; if the file is right, raise the bound "
            f"with {MAX_VOLUME_BYTES_ENV}=<bytes>", shape, nbytes)
    return nbytes


def _integers(value: str | None, what: str, path: Path) -> list[int]:
    if value is None:
        raise ValueError(f"{path}: the header has no {what} field; the file is not a complete image header")
    try:
        numbers = [int(v) for v in value.split()]
    except ValueError:
        raise ValueError(f"{path}: {what} {value[:60]!r} is not a list of whole numbers; the header is "
                         f"corrupt") from None
    if not numbers:
        raise ValueError(f"{path}: {what} is empty; the header is corrupt")
    return numbers


def _check_sizes(sizes: list[int], dimension: int, limit: int, names: tuple[str, str], path: Path) -> None:
    dim_name, sizes_name = names
    if not 1 <= dimension <= limit:
        raise ValueError(f"{path}: {dim_name} {dimension} is not supported (1 to {limit}: (Z, Y, X) plus channel / "
                         f"frame axes); the file is corrupt or not an image this package reads")
    if len(sizes) != dimension:
        raise ValueError(f"{path}: {sizes_name} lists {len(sizes)} sizes but {dim_name} is {dimension}; the header "
                         f"is corrupt")
    if min(sizes) < 1:
        raise ValueError(f"{path}: {sizes_name} {sizes} holds a size below 1; the header is corrupt")


def nrrd_element_bytes(header: TextHeader, path: Path) -> int:
    """Bytes per sample of an NRRD ``type`` (8 when unknown: the safe side for size bounds)."""
    name = header.fields.get("type", "").lower()
    if name == "block":
        return max(1, _integers(header.fields.get("blocksize"), "block size", path)[0])
    # teem's type names: "uchar", "unsigned short int", "int16_t", "long long", "float", "double" ...
    for size, words in ((8, ("64", "long", "double")), (1, ("8", "char")), (2, ("16", "short")),
                        (4, ("32", "int", "float"))):
        if any(word in name for word in words):
            return size
    return 8


def nrrd_sizes(header: TextHeader, path: Path) -> list[int]:
    """The checked ``sizes`` of an NRRD header (fastest axis first)."""
    dimension = _integers(header.fields.get("dimension"), "dimension", path)[0]
    sizes = _integers(header.fields.get("sizes"), "sizes", path)
    _check_sizes(sizes, dimension, MAX_NRRD_DIMENSION, ("dimension", "sizes"), path)
    return sizes


def metaimage_element_bytes(header: TextHeader) -> int:
    """Bytes per voxel of a MetaImage header (all channels; 8 per channel when the type is unknown)."""
    element = header.fields.get("ElementType", "").upper().removesuffix("_ARRAY")
    channels = header.fields.get("ElementNumberOfChannels", "1").strip() or "1"
    count = int(channels) if channels.isdigit() and int(channels) > 0 else 1
    return _METAIMAGE_ELEMENT_BYTES.get(element, 8) * count


def metaimage_sizes(header: TextHeader, path: Path) -> list[int]:
    """The checked ``DimSize`` of a MetaImage header (fastest axis first)."""
    dimension = _integers(header.fields.get("NDims"), "NDims", path)[0]
    sizes = _integers(header.fields.get("DimSize"), "DimSize", path)
    _check_sizes(sizes, dimension, MAX_METAIMAGE_DIMENSION, ("NDims", "DimSize"), path)
    channels = header.fields.get("ElementNumberOfChannels")
    if channels is not None and not (channels.strip().isdigit() and int(channels) >= 1):
        raise ValueError(f"{path}: ElementNumberOfChannels {channels[:20]!r} is not a whole number >= 1; the "
                         f"header is corrupt")
    return sizes


def _nifti_header(path: Path):
    """nibabel's header of a ``.nii`` / ``.nii.gz`` file (only the first 540 bytes are read)."""
    import nibabel

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        block = handle.read(540)
    if len(block) < 348:
        raise ValueError(f"{path}: {len(block)} bytes are too short for a NIfTI header (348); is the file complete?")
    sizes = {struct.unpack(order + "i", block[:4])[0] for order in "<>"}
    klass = nibabel.Nifti2Header if 540 in sizes else nibabel.Nifti1Header
    if not sizes & {348, 540}:
        raise ValueError(f"{path}: not a NIfTI file (header size field is not 348 or 540)")
    return klass(block[: klass.template_dtype.itemsize], check=False)


def nifti_stored_bytes(path: Path) -> int:
    """Bytes of a NIfTI file as stored uncompressed: ``vox_offset`` + voxels x element size (from its header)."""
    header = _nifti_header(path)
    dims = [int(d) for d in header["dim"]]
    count = math.prod(max(1, d) for d in dims[1:max(1, min(dims[0], 7)) + 1])
    return max(0, int(header["vox_offset"])) + count * header.get_data_dtype().itemsize


def metaimage_is_compressed(header: TextHeader) -> bool:
    """MetaIO's reading of ``CompressedData``: any value starting with T, t or 1 means compressed."""
    return header.fields.get("CompressedData", "").strip()[:1] in ("T", "t", "1")


def check_nifti_header(path: Path) -> None:
    """Refuse a NIfTI header whose dimensions ITK cannot read or that declares more than the size bound."""
    header = _nifti_header(path)
    dims = [int(d) for d in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise ValueError(f"{path}: NIfTI dim[0] = {dims[0]} (the number of axes) must be 1 to 7; the header is "
                         f"corrupt")
    sizes = dims[1:dims[0] + 1]
    if min(sizes) < 1:
        raise ValueError(f"{path}: NIfTI dim {sizes} holds a size below 1; the header is corrupt")
    axes = len(sizes)
    while axes > 3 and sizes[axes - 1] == 1:
        axes -= 1  # ITK drops trailing unit axes
    if axes > MAX_NIFTI_DIMENSION:
        raise ValueError(f"{path}: NIfTI dim {sizes} has {axes} axes; at most {MAX_NIFTI_DIMENSION} are "
                         f"supported ((Z, Y, X) plus frame and channel axes)")
    check_volume_size(sizes, header.get_data_dtype().itemsize, path)


def check_file_header(path: str | os.PathLike, fmt: str) -> TextHeader | None:
    """Check the header of a NIfTI / NRRD / MetaImage file before any ITK call reads it.

    Args:
        path: the file.
        fmt: ``"nifti"``, ``"nrrd"`` or ``"mha"`` (as :func:`medsam_kit.io.volume_format` names it).

    Returns:
        The parsed NRRD / MetaImage header (None for NIfTI).

    Raises:
        ValueError: unsupported dimension count, sizes not matching it, a size below 1, repeated
            shape fields, or more voxel bytes than :func:`max_volume_bytes`
            (:class:`VolumeTooLargeError`). Messages name the file.
    """
    path = Path(path)
    if fmt == "nifti":
        check_nifti_header(path)
        return None
    header = read_text_header(path)
    if header is None:
        raise ValueError(f"{path}: no NRRD / MetaImage header (an NRRD file starts with 'NRRD000x')")
    shape_keys = {"dimension", "sizes", "type", "blocksize", "datafile", "encoding", "NDims", "DimSize",
                  "ElementType", "ElementNumberOfChannels", "ElementDataFile", "CompressedData"}
    repeated = sorted(set(header.duplicates) & shape_keys)
    if repeated:
        raise ValueError(f"{path}: the header gives {', '.join(repeated)} more than once; the header is corrupt")
    if header.kind == "nrrd":
        sizes, element = nrrd_sizes(header, path), nrrd_element_bytes(header, path)
    else:
        sizes, element = metaimage_sizes(header, path), metaimage_element_bytes(header)
    check_volume_size(sizes, element, path)
    return header


def check_intensities(array: np.ndarray, source: str | os.PathLike) -> None:
    """Refuse voxel values a model cannot take: non-real types, NaN / infinite values, beyond float32.

    Args:
        array: the voxels, any shape (e.g. ``(Z, Y, X)`` or ``(C, Z, Y, X)``).
        source: what to name in the message (a file name, or e.g. "the input volume").

    Raises:
        ValueError: one line naming ``source``, the problem and the fix.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{source} holds {array.dtype} voxels; give real-valued (integer or float) intensities")
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        raise ValueError(f"{source} holds {count} NaN or infinite voxel(s); replace them (e.g. by the minimum "
                         f"intensity) first")
    if array.dtype.itemsize > 4 and array.size and np.abs(array).max() > np.finfo(np.float32).max:
        # models work in float32: these voxels would become infinite there and every result NaN-driven
        raise ValueError(f"{source} holds voxel values beyond the float32 range (|v| > 3.4e38); rescale the "
                         f"intensities first")
