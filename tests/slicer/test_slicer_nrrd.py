"""MedSAMKitLib.nrrd against the readers/writers the server uses (SimpleITK through medsam_kit.io, slicerio)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from MedSAMKitLib.nrrd import NrrdError, read_nrrd, write_nrrd

from medsam_kit.io import Geometry, Volume, read_volume, write_volume


def test_scalar_volume_reads_back_in_itk_with_its_geometry(tmp_path, oblique):
    array = np.random.default_rng(0).integers(-1000, 2000, (6, 7, 9)).astype(np.int16)  # (K, J, I)
    path = tmp_path / "volume.nrrd"
    path.write_bytes(write_nrrd(array, oblique))
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.describe_difference(Geometry.from_affine_ras(oblique), atol=1e-12) == ""


def test_vector_volume_becomes_channels_first_in_medsam_kit(tmp_path, oblique):
    array = np.random.default_rng(1).random((4, 5, 6, 3)).astype(np.float32)  # (K, J, I, C) as Slicer gives it
    path = tmp_path / "vector.nrrd"
    path.write_bytes(write_nrrd(array, oblique, compress=False))
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, np.moveaxis(array, -1, 0))  # (C, Z, Y, X)
    assert volume.geometry.almost_equal(Geometry.from_affine_ras(oblique), atol=1e-12)
    image = read_nrrd(path.read_bytes())
    np.testing.assert_array_equal(image.array, array)
    np.testing.assert_allclose(image.ijk_to_ras, oblique, rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [None, 2])
def test_files_written_by_medsam_kit_read_here(tmp_path, oblique, channels):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 5, (3, 4, 5) if channels is None else (channels, 3, 4, 5)).astype(np.uint8)
    geometry = Geometry.from_affine_ras(oblique)
    path = write_volume(tmp_path / "labels.nrrd", Volume(array, geometry))
    image = read_nrrd(path.read_bytes())
    np.testing.assert_array_equal(image.array, array if channels is None else np.moveaxis(array, 0, -1))
    np.testing.assert_allclose(image.ijk_to_ras, geometry.affine_ras(), rtol=0, atol=1e-9)


def test_slicerio_segmentation_reads_with_its_segment_metadata(tmp_path, oblique):
    import slicerio

    labels = np.zeros((3, 4, 5), np.uint8)  # (Z, Y, X)
    labels[1, 1:3, 2:4] = 2
    segmentation = {
        "voxels": labels.T, "ijkToLPS": Geometry.from_affine_ras(oblique).affine_lps(),
        "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
        "segments": [{"id": "Segment_2", "name": "MYO", "labelValue": 2, "layer": 0, "color": [1.0, 0.5, 0.0]}],
    }
    path = tmp_path / "labels.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    image = read_nrrd(path.read_bytes())
    np.testing.assert_array_equal(image.array, labels)
    np.testing.assert_allclose(image.ijk_to_ras, oblique, rtol=0, atol=1e-9)
    assert image.key_values["Segment0_Name"] == "MYO" and image.key_values["Segment0_LabelValue"] == "2"


def test_raw_big_endian_ras_header():
    array = np.arange(24, dtype=">i2").reshape(2, 3, 4)
    header = ("NRRD0005\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 4 3 2\n"
              "space directions: (2,0,0) (0,3,0) (0,0,4)\nendian: big\nencoding: raw\nspace origin: (1,2,3)\n\n")
    image = read_nrrd(header.encode() + array.tobytes())
    np.testing.assert_array_equal(image.array, array.astype(np.int16))
    np.testing.assert_array_equal(image.ijk_to_ras, [[2, 0, 0, 1], [0, 3, 0, 2], [0, 0, 4, 3], [0, 0, 0, 1]])


def _header(**fields):
    base = {"type": "uint8", "dimension": "3", "sizes": "2 2 2", "encoding": "raw"}
    base.update(fields)
    return ("NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in base.items()) + "\n").encode()


@pytest.mark.parametrize("data, match", [
    (b"P6\n2 2\n255\n", "not a NRRD file"),
    (_header() + bytes(3), "truncated file"),
    (_header(encoding="gzip") + gzip.compress(bytes(8), mtime=0)[:-6], "corrupt gzip"),
    (_header(**{"data file": "voxels.raw"}), "detached NRRD"),
    (_header(encoding="bzip2") + bytes(8), "unsupported NRRD encoding"),
    (_header(type="block") + bytes(8), "unsupported NRRD voxel type"),
    (_header(dimension="2", sizes="2 2") + bytes(4), "expected a 3D volume"),
    (_header(space="scanner-xyz") + bytes(8), "unsupported NRRD space"),
])
def test_unreadable_files_say_why(data, match):
    with pytest.raises(NrrdError, match=match):
        read_nrrd(data)


def test_writer_refuses_what_nrrd_cannot_hold(oblique):
    with pytest.raises(NrrdError, match="complex128"):
        write_nrrd(np.zeros((2, 2, 2), complex), oblique)
    with pytest.raises(NrrdError, match="shape"):
        write_nrrd(np.zeros((2, 2)), oblique)
    assert read_nrrd(write_nrrd(np.ones((2, 2, 2), bool), oblique)).array.dtype == np.uint8
