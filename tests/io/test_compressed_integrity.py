"""Compressed voxel data is checked against its checksum: one flipped bit is an error, never new voxels."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zlib

import numpy as np
import pytest

from medsam_kit.io import Geometry, Volume, read_volume, write_volume
from medsam_kit.io.headers import read_text_header

SUFFIXES = [".nii.gz", ".nrrd", ".mha"]


def _phantom() -> np.ndarray:
    """A smooth (20, 96, 96) int16 volume: compresses like a scan, so most flipped bits still inflate."""
    z, y, x = np.mgrid[:20, :96, :96]
    body = 200 * np.exp(-((y - 48) ** 2 + (x - 40) ** 2) / 800.0) + 3 * z + (x // 8) * 5
    noise = np.random.default_rng(1).integers(0, 3, body.shape)
    return (body + noise).astype(np.int16)


def _payload(path, data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the compressed voxel stream in the file's bytes, its format header skipped."""
    header = read_text_header(path)
    start = 0 if header is None else header.data_offset
    stream = data[start:]
    if stream[:2] == b"\x1f\x8b":  # gzip: 10-byte header (+ the name when FNAME is set), 8-byte trailer
        skip = 10 + (stream.index(b"\0", 10) + 1 - 10 if stream[3] & 0x08 else 0)
        return start + skip, len(data) - 8
    assert zlib.decompress(stream)  # MetaImage: a zlib stream, 2-byte header, 4-byte Adler-32 trailer
    return start + 2, len(data) - 4


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compressed")
    geometry = Geometry((0.8, 0.8, 2.5), (10.0, -20.0, 5.0))
    return {suffix: write_volume(folder / f"phantom{suffix}", Volume(_phantom(), geometry)) for suffix in SUFFIXES}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_intact_compressed_files_read_back_exactly(written, suffix):
    volume = read_volume(written[suffix])
    np.testing.assert_array_equal(volume.array, _phantom())
    assert volume.geometry.almost_equal(Geometry((0.8, 0.8, 2.5), (10.0, -20.0, 5.0)), atol=1e-5)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_flipped_bit_in_the_compressed_voxels_is_refused(written, tmp_path, suffix):
    data = written[suffix].read_bytes()
    start, end = _payload(written[suffix], data)
    positions = np.linspace(start, end - 1, 12).astype(int).tolist() + [end, len(data) - 1]  # and the trailer
    for n, position in enumerate(positions):
        for bit in (0x01, 0x10):
            bad = bytearray(data)
            bad[position] ^= bit
            path = tmp_path / f"flip_{n}_{bit}{suffix}"
            path.write_bytes(bad)
            with pytest.raises(ValueError) as info:
                read_volume(path)
            message = str(info.value)
            assert message.startswith(f"{path}: ") and "corrupt compressed data (" in message, (position, message)
            assert "re-copy or re-export" in message and "\n" not in message


def test_nibabel_alone_accepts_a_flipped_bit(written, tmp_path):
    """Why the check exists: nibabel never reads the gzip trailer, so the CRC goes unchecked."""
    import nibabel

    data = bytearray(written[".nii.gz"].read_bytes())
    data[-6] ^= 0x01  # inside the CRC-32 itself: the voxels are intact, the file is not
    path = tmp_path / "crc.nii.gz"
    path.write_bytes(data)
    np.testing.assert_array_equal(np.asanyarray(nibabel.load(path).dataobj).T, _phantom())
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(bytes(data))
    with pytest.raises(ValueError, match="CRC mismatch"):
        read_volume(path)


def test_truncated_and_oversized_streams_are_refused(written, tmp_path):
    for suffix in SUFFIXES:
        data = written[suffix].read_bytes()
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(data[: len(data) - 100])
        with pytest.raises(ValueError, match="truncated or corrupt compressed data"):
            read_volume(path)
    # an NRRD whose gzip stream holds more voxels than its sizes declare
    nrrd = written[".nrrd"].read_bytes()
    header = read_text_header(written[".nrrd"])
    extra = gzip.compress(gzip.decompress(nrrd[header.data_offset:]) * 2)
    path = tmp_path / "extra.nrrd"
    path.write_bytes(nrrd[: header.data_offset] + extra)
    with pytest.raises(ValueError, match="more than the"):
        read_volume(path)


def test_info_on_a_bit_flipped_nifti_exits_with_one_line(written, tmp_path):
    data = bytearray(written[".nii.gz"].read_bytes())
    data[len(data) // 2] ^= 0x04
    path = tmp_path / "bitflipped.nii.gz"
    path.write_bytes(data)
    result = subprocess.run([sys.executable, "-m", "medsam_kit", "info", str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode not in (0, 139, -11), result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: corrupt compressed data" in lines[0], result.stderr


@pytest.mark.parametrize("vector", [False, True])
def test_a_small_nifti_gz_cannot_inflate_far_beyond_its_header(tmp_path, vector):
    """A 100 KiB upload whose gzip stream holds 96 MiB of padding after a tiny image is refused, and quickly.

    The vector (intent) NIfTI goes through ITK and used to be inflated whole, without any bound."""
    import time

    import nibabel

    shape = (8, 8, 8, 1, 3) if vector else (8, 8, 8)
    image = nibabel.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4))
    if vector:
        image.header.set_intent("vector")
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    payload = packer.compress(image.to_bytes()) + b"".join(packer.compress(bytes(16 << 20)) for _ in range(6))
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(payload + packer.flush())
    assert path.stat().st_size < 200_000
    tic = time.perf_counter()
    with pytest.raises(ValueError, match=r"bomb\.nii\.gz: corrupt compressed data \(it inflates to more than"):
        read_volume(path)
    assert time.perf_counter() - tic < 2.0


def test_metaimage_compressed_data_spelled_t_is_checked_too(written, tmp_path):
    """MetaIO reads any CompressedData value starting with T / t / 1 as compressed; so must the check."""
    data = written[".mha"].read_bytes()
    data = data.replace(b"CompressedData = True", b"CompressedData = T   ", 1)
    start, end = _payload(written[".mha"], data)
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x10
    path = tmp_path / "flipped_t.mha"
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"flipped_t\.mha: .*corrupt compressed data"):
        read_volume(path)
