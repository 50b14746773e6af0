"""Checksums of compressed voxel data, verified before the voxels are trusted.

The readers do not check them. nibabel reads a ``.nii.gz`` only up to the last voxel, so the gzip
trailer (CRC-32 and length) is never read and a flipped bit yields different voxels without an
error; ITK's MetaImage reader prints "Uncompress failed" and returns the (partly uninitialised)
buffer; teem's gzip reader accepts some corrupt NRRD streams. Here the whole stream is inflated in
bounded chunks (memory stays at a few MiB) so zlib checks the gzip CRC-32 + length trailer or the
zlib Adler-32, and the inflated byte count is compared with what the header declares.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

from medsam_kit.io.headers import TextHeader, is_multi_file
from medsam_kit.io.validate import (
    max_volume_bytes,
    metaimage_element_bytes,
    metaimage_is_compressed,
    nifti_stored_bytes,
    nrrd_element_bytes,
)

_CHUNK = 1 << 20
_NIFTI_SLACK = 1 << 20  # bytes a NIfTI file may hold past its voxels (padding) before it counts as a bomb


def corrupt(path: str | os.PathLike, detail: str) -> ValueError:
    """The one-line error for a file whose compressed data fails its check."""
    what = "truncated or corrupt" if "ends early" in detail else "corrupt"  # a flipped bit can end a stream too
    return ValueError(f"{path}: {what} compressed data ({detail}); re-copy or re-export it")


def _detail(exc: BaseException) -> str:
    text = str(exc)
    if "CRC" in text or "incorrect data check" in text:
        return "CRC mismatch"
    if "Incorrect length" in text:  # gzip's ISIZE trailer
        return "length mismatch"
    if isinstance(exc, EOFError):
        return "the stream ends early"
    text = text.split("while decompressing data: ")[-1]  # zlib: "Error -3 while decompressing data: ..."
    return (text.splitlines() or [type(exc).__name__])[0][:80]


def drain_gzip(stream: BinaryIO, path: str | os.PathLike, limit: int | None = None) -> int:
    """Read a :class:`gzip.GzipFile` to its end, so every member's CRC-32 and length are checked.

    Args:
        stream: an open gzip stream, anywhere before its end.
        path: the file, for messages.
        limit: refuse more than this many bytes (a header's declared size bounds a decompression bomb).

    Returns:
        The number of bytes read.

    Raises:
        ValueError: :func:`corrupt` — CRC or length mismatch, truncated or invalid stream, over ``limit``.
    """
    total = 0
    try:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return total
            total += len(chunk)
            if limit is not None and total > limit:
                raise corrupt(path, f"it inflates to more than the {limit} bytes the header declares")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise corrupt(path, _detail(exc)) from None


def verify_stream(path: str | os.PathLike, offset: int = 0, expected: int | None = None, *,
                  size: int | None = None, gzip_members: bool = True, source: str | os.PathLike | None = None,
                  limit: int | None = None) -> None:
    """Inflate the compressed stream at ``offset`` in ``path`` to its end, checking its checksum.

    Args:
        path: the file holding the stream.
        offset: where the stream starts (after an NRRD / MetaImage header, or 0).
        expected: the inflated byte count the header declares (None: not checked, not bounded).
        size: compressed bytes to read (MetaImage ``CompressedDataSize``); None: to the file's end.
        gzip_members: gzip, possibly several members (NIfTI, NRRD); False: one zlib or gzip stream.
        source: the file to name in messages (default ``path``).
        limit: refuse a stream inflating to more bytes (when ``expected`` is not known exactly).

    Raises:
        ValueError: :func:`corrupt` naming ``source``.
    """
    source = source or path
    wbits = 16 + zlib.MAX_WBITS if gzip_members else 32 + zlib.MAX_WBITS  # 32: zlib or gzip header, detected
    inflater, total, data, input_done = zlib.decompressobj(wbits), 0, b"", False
    with open(path, "rb") as handle:
        handle.seek(offset)
        remaining = size

        def read() -> bytes:
            nonlocal remaining, input_done
            chunk = handle.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
            remaining = None if remaining is None else remaining - len(chunk)
            input_done = not chunk
            return chunk

        try:
            while True:
                data = data or read()
                out = inflater.decompress(data, _CHUNK)  # bounded output per call: a bomb never sits in memory
                total += len(out)
                if expected is not None and total > expected:
                    raise corrupt(source, f"it inflates to more than the {expected} bytes the header declares")
                if limit is not None and total > limit:
                    raise corrupt(source, f"it inflates to more than the {limit} bytes its header allows")
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data
                    if gzip_members and len(data) < 2:
                        data += read()
                    if not gzip_members or data[:2] != b"\x1f\x8b":
                        break  # bytes after the last member are not voxels: the readers ignore them too
                    inflater = zlib.decompressobj(wbits)
                elif input_done and not out and not data:
                    break
        except zlib.error as exc:
            raise corrupt(source, _detail(exc)) from None
    if not inflater.eof:
        raise corrupt(source, "the stream ends early")
    if expected is not None and total != expected:
        raise corrupt(source, f"the stream ends early: {total} bytes inflated, the header declares {expected}")


def _skip_lines(path: Path, offset: int, lines: int) -> int:
    """Offset after ``lines`` more text lines from ``offset`` (NRRD ``line skip``)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        for _ in range(lines):
            if not handle.readline():
                break
        return handle.tell()


def _single_data_file(header_path: Path, name: str) -> Path | None:
    """The one data file a header names; None for multi-file forms (``LIST``, ``pattern min max step``)."""
    if is_multi_file(name):
        return None
    return Path(name) if Path(name).is_absolute() else header_path.parent / name


def _shown(header_path: Path, data: Path) -> str:
    """How messages name the file: the header, and the data file when it is another one."""
    return str(header_path) if data == header_path else f"{header_path} (data file {data})"


def _int_field(header: TextHeader, key: str) -> int:
    try:
        return int(header.fields.get(key, "0").split()[0])
    except (ValueError, IndexError):
        return 0


def verify_compressed(path: str | os.PathLike, header: TextHeader | None) -> None:
    """Check the compressed voxel data of a NIfTI / NRRD / MetaImage file, if it has any.

    Args:
        path: the file (for detached headers the data file is found from the header).
        header: its parsed NRRD / MetaImage header (None for NIfTI: ``.nii.gz`` is checked whole).

    Raises:
        ValueError: :func:`corrupt` naming the file.
    """
    path = Path(path)
    if header is None:
        if path.name.lower().endswith(".gz"):
            # bounded by what the header declares (a small upload must not inflate for minutes)
            try:
                stored = min(nifti_stored_bytes(path), max_volume_bytes())
            except (OSError, EOFError, zlib.error, ValueError):
                stored = max_volume_bytes()  # the header itself does not inflate: the stream check says why
            verify_stream(path, limit=stored + _NIFTI_SLACK)
        return
    if header.kind == "nrrd":
        if header.fields.get("encoding", "").lower() not in ("gzip", "gz"):
            return
        sizes = [int(s) for s in header.fields.get("sizes", "").split()]
        expected = math.prod(sizes) * nrrd_element_bytes(header, path) + max(_int_field(header, "byteskip"), 0)
        names = header.data_files()
        data = path if not names else _single_data_file(path, names[0])
        offset = header.data_offset if not names else 0
        if data is None or offset is None or not data.is_file():
            return  # multi-file data, or no data: the reader reports it
        offset = _skip_lines(data, offset, _int_field(header, "lineskip"))
        verify_stream(data, offset, expected, source=_shown(path, data))
        return
    if not metaimage_is_compressed(header):
        return
    sizes = [int(s) for s in header.fields.get("DimSize", "").split()]
    expected = math.prod(sizes) * metaimage_element_bytes(header)
    names = header.data_files()
    data = path if not names else _single_data_file(path, names[0])
    offset = header.data_offset if not names else max(_int_field(header, "HeaderSize"), 0)
    if data is None or offset is None or not data.is_file():
        return
    size = _int_field(header, "CompressedDataSize") or None
    verify_stream(data, offset, expected, size=size, gzip_members=False, source=_shown(path, data))
