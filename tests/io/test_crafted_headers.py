"""Headers parsed the way ITK's readers parse them, and header shapes checked before ITK sees them.

SimpleITK 2.5 segfaults on an NRRD declaring 11-16 dimensions, so the CLI checks run the reader in a
subprocess: a crash there is exit code 139 / -11, not a failed test process.
"""

from __future__ import annotations

import gzip
import math
import struct
import subprocess
import sys

import nibabel
import numpy as np
import pytest

from medsam_kit.io import Volume, read_image_header, read_volume, write_volume
from medsam_kit.io.headers import parse_metaimage_header, parse_nrrd_header, read_text_header


def _nrrd_dims(dimension: int, sizes: list[int] | None = None) -> bytes:
    sizes = sizes if sizes is not None else [1] * dimension
    return (b"NRRD0004\ntype: uint8\ndimension: %d\nsizes: %s\nencoding: raw\n\n" % (dimension, " ".join(
        map(str, sizes)).encode())) + b"\0" * min(max(math.prod(sizes), 0), 64)


def _mha_dims(ndims: int, sizes: list[int] | None = None, element: bytes = b"MET_UCHAR") -> bytes:
    sizes = sizes if sizes is not None else [1] * ndims
    return (b"ObjectType = Image\nNDims = %d\nDimSize = %s\nElementType = %s\nElementDataFile = LOCAL\n"
            % (ndims, " ".join(map(str, sizes)).encode(), element)) + b"\0" * min(max(math.prod(sizes), 0), 64)


def _nifti(dims: list[int], dtype=np.uint8) -> bytes:
    header = nibabel.Nifti1Header()
    header.set_data_dtype(dtype)
    raw = bytearray(header.binaryblock)
    raw[40:56] = struct.pack("<8h", *(dims + [1] * (8 - len(dims))))
    raw[108:112] = struct.pack("<f", 352.0)  # vox_offset
    return bytes(raw) + b"\0" * 4 + b"\0" * 64


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsam_kit", *args], capture_output=True, text=True, timeout=300)


def _assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode in (1, 2), (result.returncode, result.stderr[-2000:])  # 139 / -11: segfault
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


# ---------------------------------------------------------------------------- the parser
@pytest.mark.parametrize("separator", [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85"])
def test_nrrd_lines_split_only_where_teem_splits_them(separator):
    header = parse_nrrd_header(b"NRRD0004\n#" + separator + b"\ndata file: /etc/passwd\ntype: uint8\n\nDATA")
    assert header.data_files() == ["/etc/passwd"] and header.fields["type"] == "uint8"
    assert header.data_offset == len(b"NRRD0004\n#\n") + len(separator) + 36
    assert header.control_lines == ([] if separator == b"\x85" else ["#" + separator.decode("latin-1")])


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_nrrd_header_ends_at_the_first_empty_line_whatever_the_line_ends(line_end):
    text = line_end.join([b"NRRD0004", b"# c", b"DATA FILE: x.raw", b"key:=value: v", b"sizes: 1 2", b"", b"\x01"])
    header = parse_nrrd_header(text)
    assert header.data_files() == ["x.raw"] and header.key_values == {"key": "value: v"}
    assert header.fields["sizes"] == "1 2" and text[header.data_offset:] == b"\x01"


def test_metaimage_header_reads_keys_like_metaio():
    data = (b"NDims = 3\r\nComment = a\x1cElementDataFile = LOCAL\nelementdatafile = LOCAL\n"
            b"  ElementDataFile : /etc/passwd\nNDims = 9\n")
    header = parse_metaimage_header(data)
    assert header.data_files() == ["/etc/passwd"] and header.fields["NDims"] == "3"
    assert header.malformed == ["elementdatafile = LOCAL"] and data[header.data_offset:] == b"NDims = 9\n"
    assert parse_metaimage_header(b"NDims = 3\nElementDataFile\n= /x\n").malformed == ["ElementDataFile", "= /x"]
    assert parse_metaimage_header(b"DimSize = 2 3\n4 ElementDataFile = /x\n").malformed == ["4 ElementDataFile = /x"]
    assert parse_metaimage_header(b"Comment = x\rElementDataFile = LOCAL\n").lone_cr


def test_detached_headers_name_their_data_file_whatever_the_line_ends(tmp_path):
    for suffix in (".nhdr", ".mhd"):
        path = write_volume(tmp_path / f"vol{suffix}", Volume(np.ones((2, 3, 4), np.int16)))
        name = read_text_header(path).data_files()
        assert len(name) == 1 and (tmp_path / name[0]).is_file()
        crlf = tmp_path / f"crlf{suffix}"
        crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n"))  # no final line end
        assert read_text_header(crlf).data_files() == name


# ---------------------------------------------------------------------------- shape checks before ITK
@pytest.mark.parametrize("name,data,expected", [
    ("dims12.nrrd", _nrrd_dims(12), "dimension 12"),
    ("dims16.nrrd", _nrrd_dims(16), "dimension 16"),
    ("dims6.nrrd", _nrrd_dims(6), "dimension 6"),
    ("count.nrrd", _nrrd_dims(3, [4, 4]), "lists 2 sizes"),
    ("zero.nrrd", _nrrd_dims(3, [4, 0, 4]), "below 1"),
    ("words.nrrd", _nrrd_dims(3, [4, 4, 4]).replace(b"sizes: 4 4 4", b"sizes: 4 four 4"), "whole numbers"),
    ("huge.nrrd", _nrrd_dims(3, [100000, 100000, 100000]), "over the bound"),
    ("twice.nrrd", _nrrd_dims(3).replace(b"dimension: 3\n", b"dimension: 3\ndimension: 3\n"), "more than once"),
    ("dims12.mha", _mha_dims(12), "NDims 12"),
    ("dims5.mha", _mha_dims(5), "NDims 5"),
    ("count.mha", _mha_dims(3, [4, 4, 4, 4]), "lists 4 sizes"),
    ("huge.mha", _mha_dims(3, [1 << 20] * 3, b"MET_FLOAT"), "over the bound"),
    ("dims6.nii", _nifti([6, 2, 2, 2, 2, 2, 2]), "6 axes"),
    ("huge.nii", _nifti([3, 32767, 32767, 32767]), "over the bound"),
    ("negative.nii", _nifti([3, -5, 2, 2]), "below 1"),
    ("noaxes.nii", _nifti([0, 2, 2, 2]), "dim[0] = 0"),
])
def test_bad_header_shapes_are_refused_before_itk_reads_them(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    for reader in (read_volume, read_image_header):
        with pytest.raises(ValueError) as info:
            reader(path)
        assert str(path) in str(info.value) and expected in str(info.value)
        assert "\n" not in str(info.value)


def test_supported_shapes_still_read(tmp_path):
    for name, data in (("four.nrrd", _nrrd_dims(4, [1, 2, 3, 2])), ("three.mha", _mha_dims(3, [2, 2, 2])),
                       ("unit.nii", _nifti([7, 2, 2, 2, 1, 1, 1, 1]))):
        path = tmp_path / name
        path.write_bytes(data)
        assert read_image_header(path) is not None and read_volume(path).array.size in (8, 12)


def test_info_on_a_twelve_dimensional_nrrd_exits_with_one_line(tmp_path):
    path = tmp_path / "dims12.nrrd"
    path.write_bytes(_nrrd_dims(12))
    _assert_one_line_error(_run_cli("info", str(path)), str(path), "dimension 12")


def test_info_on_absurd_nifti_and_metaimage_exits_with_one_line(tmp_path):
    nifti, mha = tmp_path / "huge.nii.gz", tmp_path / "dims12.mha"
    nifti.write_bytes(gzip.compress(_nifti([3, 32767, 32767, 32767])))  # 32 TiB declared in ~100 bytes
    mha.write_bytes(_mha_dims(12))
    _assert_one_line_error(_run_cli("info", str(nifti)), str(nifti), "over the bound")
    _assert_one_line_error(_run_cli("info", str(mha)), str(mha), "NDims 12")


def test_data_file_paths_cover_single_names_lists_and_patterns(tmp_path):
    from medsam_kit.io.headers import data_file_paths

    cases = {
        "single.nhdr": (b"NRRD0004\ndimension: 1\nsizes: 2\ntype: uchar\ndata file: my scan.raw\n", ["my scan.raw"]),
        "pattern.nhdr": (b"NRRD0004\ndimension: 2\nsizes: 2 3\ntype: uchar\ndata file: s%02d.raw 1 5 2 1\n",
                         ["s01.raw", "s03.raw", "s05.raw"]),
        "list.nhdr": (b"NRRD0004\ndimension: 2\nsizes: 2 2\ntype: uchar\ndata file: LIST 1\n\na.raw\nb c.raw\n",
                      ["a.raw", "b c.raw"]),
        "meta.mhd": (b"NDims = 1\nDimSize = 2\nElementType = MET_UCHAR\nElementDataFile = /abs/x y.raw\n",
                     ["/abs/x y.raw"]),
        "local.mha": (b"NDims = 1\nDimSize = 2\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n\x00\x00", []),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_bytes(text)
        found = [p.as_posix() if p.is_absolute() and not str(p).startswith(str(tmp_path)) else p.name
                 for p in data_file_paths(tmp_path / name)]
        assert found == expected, name
