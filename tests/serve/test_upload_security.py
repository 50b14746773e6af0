"""Uploads crafted to make the server read another file, crash the reader or accept corrupt voxels.

Every refused header is first shown to be a real attack: saved as a file, SimpleITK reads the
server-side "secret" through it. The server must answer 4xx with one line naming the client's file,
never 201 (which would mean it read the secret as the volume).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from serve_helpers import AUTH, random_volume, upload, volume_bytes

SECRET = np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8) * 7  # (Z, Y, X)
NRRD_FIELDS = b"type: short\ndimension: 3\nsizes: 8 8 2\nencoding: raw\nendian: little\n"
MHA_FIELDS = b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 2\nElementType = MET_SHORT\nElementByteOrderMSB = False\n"
# Bytes Python's str.splitlines() breaks lines at but the readers do not (plus \r for MetaIO's values).
SPLITLINES_ONLY = {"VT": b"\x0b", "FF": b"\x0c", "FS": b"\x1c", "GS": b"\x1d", "RS": b"\x1e", "NEL": b"\x85"}


def _nrrd(key: bytes, separator: bytes):
    # "#<sep>" reads to splitlines as "#" and an empty line (the header's end); teem sees one comment
    return lambda target: b"NRRD0004\n#" + separator + b"\n" + NRRD_FIELDS + key + b": " + target + b"\n\n"


def _mha(separator: bytes):
    # MetaIO reads Comment's value up to "\n", so the first ElementDataFile is part of the comment
    return lambda target: (MHA_FIELDS + b"Comment = x" + separator + b"ElementDataFile = LOCAL\n"
                           + b"ElementDataFile = " + target + b"\n")


VARIANTS = {
    **{f"nrrd-data-file-{n}": ("scan.nrrd", _nrrd(b"data file", c)) for n, c in SPLITLINES_ONLY.items()},
    **{f"nrrd-datafile-{n}": ("scan.nrrd", _nrrd(b"DataFile", c)) for n, c in SPLITLINES_ONLY.items()},
    **{f"mha-{n}": ("scan.mha", _mha(c)) for n, c in {**SPLITLINES_ONLY, "CR": b"\r"}.items()},
    # teem ends a line at a lone \r too: the data file line is not part of the comment
    "nrrd-lone-cr": ("scan.nrrd", lambda t: b"NRRD0004\n# note\rdata file: " + t + b"\n" + NRRD_FIELDS + b"\n"),
    # MetaIO reads a key up to "=" or ":" across a line break, and takes ":" as a separator
    "mha-key-split": ("scan.mha", lambda t: MHA_FIELDS + b"ElementDataFile\n= " + t + b"\n"),
    "mha-colon": ("scan.mha", lambda t: MHA_FIELDS + b"ElementDataFile: " + t + b"\n"),
    # MetaIO matches keys case-sensitively: the lower-case line is ignored, the next one is used
    "mha-case": ("scan.mha", lambda t: MHA_FIELDS + b"elementdatafile = LOCAL\nElementDataFile = " + t + b"\n"),
}


def _one_line_error(response, statuses: tuple[int, ...], filename: str) -> str:
    assert response.status_code in statuses, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    assert filename in detail and "medsam-upload-" not in detail, detail
    return detail


@pytest.fixture
def secret(tmp_path):
    """A server-side file that reads as a (2, 8, 8) int16 volume through the crafted headers."""
    path = tmp_path / "secret.raw"
    SECRET.astype("<i2").tofile(path)
    return path


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_header_naming_another_file_is_refused(make_client, tmp_path, secret, variant):
    filename, build = VARIANTS[variant]
    data = build(str(secret).encode())
    crafted = tmp_path / f"crafted{filename[-5:]}"
    crafted.write_bytes(data)
    # the attack is real: ITK reads the secret through this header
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(crafted))), SECRET)
    client = make_client()
    _one_line_error(upload(client, data, filename), (400, 415), filename)
    assert client.get("/v1/volumes", headers=AUTH).json() == {"volumes": []}


def test_plain_headers_with_crlf_comments_and_key_values_still_upload(make_client, tmp_path):
    raw = random_volume((2, 8, 8)).astype("<i2").tobytes()
    nrrd = (b"NRRD0004\r\n# a comment: with a colon, by \xc3\x85sa (UTF-8)\r\n" + NRRD_FIELDS.replace(b"\n", b"\r\n")
            + b"note:=data file: not a field\r\n\r\n" + raw)
    mha = MHA_FIELDS + b"Comment = made by hand\nElementDataFile = LOCAL\n" + raw
    client = make_client()
    for data, filename in ((nrrd, "crlf.nrrd"), (mha, "plain.mha")):
        response = upload(client, data, filename)
        assert response.status_code == 201, response.text
        assert response.json()["shape_zyx"] == [2, 8, 8]


def test_twelve_dimensional_header_is_refused_not_a_crash(make_client):
    # SimpleITK 2.5 segfaults on NRRD dimension 11-16: one upload used to kill the server
    data = (b"NRRD0004\ntype: uint8\ndimension: 12\nsizes: " + b" ".join([b"1"] * 12)
            + b"\nencoding: raw\n\n" + b"\0")
    client = make_client()
    detail = _one_line_error(upload(client, data, "dims.nrrd"), (400, 422), "dims.nrrd")
    assert "dimension 12" in detail
    assert client.get("/v1/info", headers=AUTH).status_code == 200  # still serving


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_bit_flipped_compressed_upload_is_refused(make_client, tmp_path, suffix):
    data = bytearray(volume_bytes(tmp_path, random_volume((4, 32, 32)), suffix=suffix))
    data[len(data) * 2 // 3] ^= 0x04  # inside the compressed voxels, whatever the header's length
    detail = _one_line_error(upload(make_client(), bytes(data), f"scan{suffix}"), (400,), f"scan{suffix}")
    assert "corrupt compressed data" in detail
