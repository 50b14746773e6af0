"""Uploaded volume files in, label-map files out.

Uploads (:func:`upload_suffix`, :func:`read_upload`): the client's file name only picks the reader by
its suffix (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``); the bytes are stored by the server under a
name it chooses in a private temporary folder, so no request can name a server-side path. Formats
whose header may point at another file are refused: detached ``.nhdr`` / ``.mhd`` by suffix, and an
attached-looking ``.nrrd`` / ``.mha`` whose header still names a data file (``data file:``,
``ElementDataFile = /etc/...``) by reading the header before any reader sees it, with lines split as
the readers split them (:mod:`medsam_kit.io.headers`). The header's shape is checked against the
server's memory bound before the voxels are read, so a small gzip file cannot expand into gigabytes,
and compressed voxels must pass their checksum. Every problem is an :class:`~medsam_kit.serve.errors.ApiError`
with a one-line reason that names the client's file name, never the temporary path.

Results (:func:`encode_labels`): a ``(Z, Y, X)`` uint8 label map with the uploaded volume's geometry
as the bytes of a NRRD, a NIfTI (``.nii.gz``) or a 3D Slicer segmentation (``.seg.nrrd``, written
with ``slicerio``: one segment per model label with its name, colour and label value).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsam_kit.io import Geometry, Volume, read_image_header, read_volume, write_volume
from medsam_kit.io.headers import HEADER_LIMIT, control_character, parse_metaimage_header, parse_nrrd_header
from medsam_kit.io.validate import VolumeTooLargeError, check_intensities
from medsam_kit.serve.errors import ApiError, quoted

log = logging.getLogger(__name__)

#: Upload suffixes the server reads (single-file formats only), longest first.
UPLOAD_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha")
_DETACHED = (".nhdr", ".mhd", ".hdr", ".img", ".raw")
#: Result formats: ``output`` query value -> file name in ``Content-Disposition``.
OUTPUT_FILES = {"seg.nrrd": "labels.seg.nrrd", "nrrd": "labels.nrrd", "nifti": "labels.nii.gz"}
_MODEL_BYTES_PER_VOXEL = 4  # the Segmenter works on a float32 copy of every channel


def _short(name: str, limit: int = 80) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def upload_suffix(filename: str) -> str:
    """The reader suffix of the client's ``filename`` (415 for anything the server does not read)."""
    lower = filename.strip().lower()
    for suffix in UPLOAD_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    if lower.endswith(_DETACHED):
        raise ApiError(415, f"{_short(filename)!r}: header + detached data files (.nhdr, .mhd, .hdr/.img) are "
                            f"refused; send one self-contained file (.nrrd, .nii, .nii.gz or .mha)")
    raise ApiError(415, f"{_short(filename)!r}: unsupported file type; send a volume as "
                        f"{', '.join(UPLOAD_SUFFIXES)} (the filename query parameter picks the reader)")


def check_self_contained(path: Path, suffix: str, filename: str) -> None:
    """Refuse an NRRD / MetaImage upload whose header names another file to read the voxels from.

    The header is parsed the way the readers split it (:mod:`medsam_kit.io.headers`), and anything the
    readers might split differently is refused too: control bytes other than tab and line ends, a
    MetaImage line with a lone carriage return, lines that are neither fields nor comments, a header
    that does not end within the first MiB.
    """
    if suffix not in (".nrrd", ".mha"):
        return
    shown = repr(_short(filename))
    with open(path, "rb") as handle:
        data = handle.read(HEADER_LIMIT)
        at_eof = not handle.read(1)
    if suffix == ".nrrd":
        try:
            header = parse_nrrd_header(data, at_eof)
        except ValueError:
            raise ApiError(400, f"{shown} is not an NRRD file (no 'NRRD000x' magic line)") from None
    else:
        header = parse_metaimage_header(data, at_eof)
    if header.data_files():
        fix = "a single .nrrd with the voxels inside" if suffix == ".nrrd" else "a .mha with 'ElementDataFile = LOCAL'"
        raise ApiError(415, f"{shown}: the header names a detached data file; send {fix}")
    if header.control_lines:
        bad = control_character(header.control_lines[0])
        raise ApiError(400, f"{shown}: a header line holds the control character {bad!r}; send a header of printable "
                            f"text lines")
    if header.lone_cr:
        raise ApiError(400, f"{shown}: a header line holds a lone carriage return; end header lines with \\n or \\r\\n")
    if header.malformed:
        raise ApiError(400, f"{shown}: header line {_short(header.malformed[0], 40)!r} is neither a field nor a "
                            f"comment; the header is corrupt")
    if not header.complete:
        if suffix == ".mha":
            raise ApiError(400, f"{shown} is not a MetaImage file (no ElementDataFile line in its header)")
        raise ApiError(400, f"{shown}: the NRRD header has no end (an empty line) in its first "
                            f"{HEADER_LIMIT >> 20} MiB; send a complete .nrrd file")


def _unreadable(exc: Exception, path: Path, filename: str) -> ApiError:
    """400 naming the client's file: reader messages name the temporary file, which the client must not see."""
    shown = repr(_short(filename))
    message = str(exc).replace(str(path), shown).replace(str(path.parent), "<upload>")
    message = message if shown in message else f"{shown}: {message}"
    return ApiError(400, f"cannot read {message}")


def _check_channels(count: int, accepted: Sequence[int], filename: str) -> None:
    if count not in accepted:
        wanted = " or ".join(str(c) for c in accepted)
        raise ApiError(422, f"{_short(filename)!r} has {count} channel(s) but the model takes {wanted}; send a "
                            f"multi-channel volume (4D NIfTI / multi-component NRRD) in the model's channel order "
                            f"(GET /v1/info lists the channels)")


def read_upload(path: Path, filename: str, accepted_channels: Sequence[int], max_bytes: int) -> Volume:
    """Read an uploaded volume file stored at ``path`` (server-chosen) and check it for the model.

    Args:
        path: the stored upload, with the suffix returned by :func:`upload_suffix`.
        filename: the client's file name (messages only).
        accepted_channels: channel counts the model takes (``C`` of ``(C, Z, Y, X)``; 1 for ``(Z, Y, X)``).
        max_bytes: bound on the float32 working copy (``C * Z * Y * X * 4``) the model will need.

    Returns:
        :class:`Volume` with ``array`` ``(Z, Y, X)`` or ``(C, Z, Y, X)`` (real numbers, finite in float32) and
        LPS geometry.

    Raises:
        ApiError: 400 unreadable, 413 too large for the memory bound, 415 detached data, 422 wrong
            channel count / pixel type / non-finite voxels / voxels beyond float32.
    """
    suffix = upload_suffix(filename)
    check_self_contained(path, suffix, filename)
    try:
        header = read_image_header(path)
    except VolumeTooLargeError as exc:  # over the io layer's bound, which is above any server's
        raise ApiError(413, f"{_short(filename)!r} declares {exc.nbytes / 2**20:.0f} MiB of voxels, over the server's "
                            f"memory bound of {max_bytes / 2**20:.0f} MiB (--max-memory-mb)") from None
    except Exception as exc:  # any library error on client bytes means a bad file
        raise _unreadable(exc, path, filename) from None
    if header is not None:
        shape = header[0]
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ApiError(422, f"{_short(filename)!r} has shape {list(shape)}; expected a 3D volume (Z, Y, X) or "
                                f"channels of one (C, Z, Y, X)")
        needed = math.prod(int(s) for s in shape) * _MODEL_BYTES_PER_VOXEL  # Python ints: no overflow
        if needed > max_bytes:
            raise ApiError(413, f"{_short(filename)!r} has shape {list(shape)}: {needed / 2**20:.0f} MiB as float32, "
                                f"over the server's memory bound of {max_bytes / 2**20:.0f} MiB (--max-memory-mb)")
        _check_channels(shape[0] if len(shape) == 4 else 1, accepted_channels, filename)
    try:
        volume = read_volume(path)
    except Exception as exc:  # corrupt files raise many library-specific types
        log.debug("upload %s unreadable", quoted(filename), exc_info=True)
        raise _unreadable(exc, path, filename) from None
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if min(array.shape) < 1:
        raise ApiError(422, f"{_short(filename)!r} is empty (shape {list(array.shape)})")
    try:
        check_intensities(array, repr(_short(filename)))
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    _check_channels(1 if array.ndim == 3 else array.shape[0], accepted_channels, filename)
    return Volume(array, volume.geometry, {"format": volume.meta.get("format"), "filename": _short(filename)})


# ---------------------------------------------------------------------------- results
def _extent(mask: np.ndarray) -> list[int]:
    """Slicer segment extent ``[i0, i1, j0, j1, k0, k1]`` (inclusive, x/y/z index order) of a ``(Z, Y, X)`` mask."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    extent = []
    for axes in ((0, 1), (0, 2), (1, 2)):  # project onto x, then y, then z
        hits = np.flatnonzero(mask.any(axis=axes))
        extent += [int(hits[0]), int(hits[-1])]
    return extent


def write_seg_nrrd(path: Path, labels: np.ndarray, geometry: Geometry, table: Sequence[dict]) -> Path:
    """Write a 3D Slicer segmentation: ``labels`` ``(Z, Y, X)`` uint8, one segment per ``table`` entry.

    Every label of ``table`` becomes a segment (also when absent from ``labels``, so the user sees
    all of the model's structures), with its name, 0-255 colour (stored 0-1) and label value on
    layer 0; geometry is the volume's ``ijkToLPS``.
    """
    import slicerio

    segments = [{"id": f"Segment_{entry['value']}", "name": entry["name"], "labelValue": int(entry["value"]),
                 "layer": 0, "color": [c / 255.0 for c in entry["color"]],
                 "extent": _extent(labels == entry["value"])} for entry in table]
    segmentation = {
        "voxels": labels.T,  # slicerio writes (i, j, k) = (x, y, z) Fortran order: the (Z, Y, X) memory as is
        "ijkToLPS": geometry.affine_lps(),
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "segments": segments,
    }
    slicerio.write_segmentation(str(path), segmentation, compression_level=1)
    return path


def encode_labels(labels: np.ndarray, geometry: Geometry, table: Sequence[dict], output: str) -> tuple[bytes, str]:
    """``(file bytes, file name)`` of a ``(Z, Y, X)`` label map in ``output`` format (see :data:`OUTPUT_FILES`)."""
    if output not in OUTPUT_FILES:
        raise ApiError(422, f"output {output!r} unknown; choose one of {', '.join(OUTPUT_FILES)}")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    name = OUTPUT_FILES[output]
    with tempfile.TemporaryDirectory(prefix="medsam-result-") as tmp:
        path = Path(tmp) / name
        if output == "seg.nrrd":
            write_seg_nrrd(path, labels, geometry, table)
        else:
            write_volume(path, Volume(labels, geometry, {"format": "labels"}))
        return path.read_bytes(), name
