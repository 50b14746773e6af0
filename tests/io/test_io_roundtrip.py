"""Round trips of every volume format: arrays equal to the bit, geometry equal (within format precision)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medsam_kit.io import Geometry, Volume, read_image_header, read_volume, volume_format, write_volume

OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
GEOMETRIES = {
    "identity": Geometry((1.0, 1.0, 1.0)),
    # right-handed oblique grid, anisotropic spacing, non-zero origin
    "oblique": Geometry((0.7, 0.9, 5.5), (12.25, -40.5, 33.125), tuple(map(tuple, OBLIQUE))),
    # left-handed: the slice axis points against x × y (e.g. slices stored superior → inferior)
    "left_handed": Geometry((0.8, 0.8, 3.0), (-100.5, 20.0, 7.0), tuple(map(tuple, OBLIQUE @ np.diag([1, 1, -1])))),
    # LPS-flipped axes as in many RAS-stored NIfTI files (direction diag(-1, -1, 1))
    "lps_flip": Geometry((1.5, 1.5, 8.0), (120.0, 130.0, -50.0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1))),
}
# (suffix, exact geometry?) — NIfTI keeps the affine in float32, so compare within 1e-5 mm.
FILE_FORMATS = [(".nii.gz", 1e-5), (".nii", 1e-5), (".nrrd", 1e-9), (".nhdr", 1e-9), (".mha", 1e-9), (".mhd", 1e-9),
                (".tif", 0.0), (".h5", 0.0)]


def _array(dtype, shape=(6, 9, 11), seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype) * 1000
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -30000), min(info.max, 30000), shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("suffix,atol", FILE_FORMATS)
@pytest.mark.parametrize("geometry_name", list(GEOMETRIES))
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32"])
def test_file_round_trip(tmp_path, suffix, atol, geometry_name, dtype):
    geometry = GEOMETRIES[geometry_name]
    array = _array(dtype)
    path = write_volume(tmp_path / f"vol{suffix}", Volume(array, geometry))
    back = read_volume(path)
    assert back.array.dtype == array.dtype
    assert np.array_equal(back.array, array)
    assert back.geometry.almost_equal(geometry, atol=atol), back.geometry.describe_difference(geometry, 1e-12)
    if atol == 0.0:
        assert back.geometry == geometry


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".tif", ".h5"])
def test_multichannel_round_trip(tmp_path, suffix):
    array = _array("float32", shape=(4, 5, 6, 7))
    geometry = GEOMETRIES["oblique"]
    back = read_volume(write_volume(tmp_path / f"mc{suffix}", Volume(array, geometry)))
    assert back.array.shape == (4, 5, 6, 7)
    assert np.array_equal(back.array, array)
    assert back.geometry.almost_equal(geometry, atol=1e-9)


def test_nifti_4d_time_series_keeps_frames_first(tmp_path):
    array = _array("int16", shape=(3, 5, 6, 7))
    back = read_volume(write_volume(tmp_path / "cine_4d.nii.gz", Volume(array, GEOMETRIES["oblique"])))
    assert back.array.shape == (3, 5, 6, 7)
    assert np.array_equal(back.array, array)
    assert back.geometry.almost_equal(GEOMETRIES["oblique"], atol=1e-5)


@pytest.mark.parametrize("geometry_name", ["oblique", "lps_flip"])
def test_dicom_series_round_trip(tmp_path, geometry_name):
    geometry = GEOMETRIES[geometry_name]
    array = _array("int16")
    path = write_volume(tmp_path / "series", Volume(array, geometry, {"modality": "CT"}), folder_format="dicom")
    assert volume_format(path) == "folder" and len(list(path.glob("*.dcm"))) == array.shape[0]
    back = read_volume(path)
    assert np.array_equal(back.array, array)
    assert back.geometry.almost_equal(geometry, atol=1e-6), back.geometry.describe_difference(geometry, 1e-9)
    assert back.meta["modality"] == "CT"


def test_dicom_left_handed_grid_keeps_world_positions(tmp_path):
    """DICOM cannot store a left-handed grid: it is written Z-reversed, voxel by voxel at the same place."""
    geometry = GEOMETRIES["left_handed"]
    array = _array("uint16")
    back = read_volume(write_volume(tmp_path / "series", Volume(array, geometry), folder_format="dicom"))
    assert back.geometry.is_right_handed
    assert np.array_equal(back.array, array[::-1])
    nz = array.shape[0]
    # world position of every original voxel equals that of its mirrored index in the re-read grid
    ijk = np.array([[i, j, k] for k in range(nz) for j in (0, 8) for i in (0, 10)], dtype=float)
    mirrored = ijk.copy()
    mirrored[:, 2] = nz - 1 - mirrored[:, 2]
    assert np.allclose(geometry.index_to_world(ijk), back.geometry.index_to_world(mirrored), atol=1e-6)


def test_dicom_rejects_float(tmp_path):
    with pytest.raises(TypeError, match="DICOM"):
        write_volume(tmp_path / "series", Volume(_array("float32"), Geometry()), folder_format="dicom")


@pytest.mark.parametrize("folder_format,dtype", [("png-slices", "uint8"), ("png-slices", "uint16"),
                                                 ("tiff-slices", "float32")])
def test_slice_folder_round_trip(tmp_path, folder_format, dtype):
    array = np.abs(_array(dtype)) if np.dtype(dtype).kind != "f" else _array(dtype)
    array = array.astype(dtype)
    geometry = GEOMETRIES["oblique"]
    path = write_volume(tmp_path / "slices", Volume(array, geometry), folder_format=folder_format)
    back = read_volume(path)
    assert np.array_equal(back.array, array)
    assert back.geometry == geometry  # kept in a PNG text chunk / the TIFF description


def test_png_single_slice(tmp_path):
    array = _array("uint8", shape=(1, 13, 17))
    back = read_volume(write_volume(tmp_path / "s.png", Volume(array, GEOMETRIES["identity"])))
    assert back.array.shape == (1, 13, 17) and np.array_equal(back.array, array)


def test_slice_folder_natural_order(tmp_path):
    """Slices named 2, 10, 1 are stacked as 1, 2, 10 (natural, not lexical, order)."""
    for index in (2, 10, 1):
        write_volume(tmp_path / "s" / f"im{index}.png", Volume(np.full((1, 4, 4), index, np.uint8)))
    assert read_volume(tmp_path / "s").array[:, 0, 0].tolist() == [1, 2, 10]


def test_hdf5_key_selection(tmp_path):
    import h5py

    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((2, 3, 4), np.uint8)
        f["label"] = np.ones((2, 3, 4), np.uint8)
    with pytest.raises(ValueError, match="key="):
        read_volume(path)
    assert read_volume(path, key="label").array.sum() == 24
    with pytest.raises(KeyError, match="nope"):
        read_volume(path, key="nope")


def test_header_only_read(tmp_path):
    geometry = GEOMETRIES["oblique"]
    path = write_volume(tmp_path / "h.nrrd", Volume(_array("int16"), geometry))
    shape, header_geometry = read_image_header(path)
    assert shape == (6, 9, 11) and header_geometry.almost_equal(geometry, 1e-9)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    """A writer that fails half-way leaves neither the final name nor temporary files behind."""
    from medsam_kit.io import _sitk

    target = tmp_path / "out.nii.gz"

    def failing_write(path, volume, vector, compress=True):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(_sitk, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_volume(target, Volume(_array("int16"), Geometry()))
    assert os.listdir(tmp_path) == []


def test_failed_rewrite_keeps_old_file(tmp_path, monkeypatch):
    from medsam_kit.io import _sitk

    target = write_volume(tmp_path / "keep.nrrd", Volume(_array("int16"), Geometry()))
    before = target.read_bytes()
    monkeypatch.setattr(_sitk, "write", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        write_volume(target, Volume(_array("int16", seed=1), Geometry()))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["keep.nrrd"]


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_volume(tmp_path / "t.nii.gz", Volume(_array("int16", shape=(20, 30, 30)), Geometry()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.nii.gz"):
        read_volume(path)
    plain = write_volume(tmp_path / "p.nii", Volume(_array("int16", shape=(20, 30, 30)), Geometry()))
    plain.write_bytes(plain.read_bytes()[:-10])  # ITK would zero-fill the missing voxels silently
    with pytest.raises(ValueError, match="truncated"):
        read_volume(plain)
    (tmp_path / "g.nii.gz").write_bytes(gzip.compress(b"not a nifti at all"))
    with pytest.raises(ValueError, match="g.nii.gz"):
        read_volume(tmp_path / "g.nii.gz")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "x.xyz").write_text("hello")
    with pytest.raises(ValueError, match="unknown volume format"):
        read_volume(tmp_path / "x.xyz")


def test_geometry_affines_and_index_mapping():
    geometry = GEOMETRIES["oblique"]
    assert Geometry.from_affine_lps(geometry.affine_lps()).almost_equal(geometry, 1e-12)
    assert Geometry.from_affine_ras(geometry.affine_ras()).almost_equal(geometry, 1e-12)
    ijk = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert np.allclose(geometry.world_to_index(geometry.index_to_world(ijk)), ijk)
    assert np.allclose(geometry.index_to_world([0, 0, 0]), geometry.origin)
    assert Geometry.from_json(geometry.to_json()) == geometry
    with pytest.raises(ValueError, match="spacing"):
        Geometry((1.0, 0.0, 1.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".tif", ".h5"])
def test_non_finite_values_survive(tmp_path, suffix):
    """ITK's NIfTI reader alone would turn NaN/Inf into 0; a NaN must stay visible to checks."""
    array = _array("float32")
    array[1, 2, 3], array[0, 0, 0], array[2, 1, 1] = np.nan, np.inf, -np.inf
    back = read_volume(write_volume(tmp_path / f"nan{suffix}", Volume(array, GEOMETRIES["oblique"])))
    assert np.isnan(back.array[1, 2, 3]) and np.isposinf(back.array[0, 0, 0]) and np.isneginf(back.array[2, 1, 1])
    assert np.array_equal(back.array, array, equal_nan=True)


def test_nifti_scaled_integers_match_itk(tmp_path):
    """scl_slope/scl_inter are applied like ITK does (same values and pixel type)."""
    import nibabel
    import SimpleITK as sitk

    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = nibabel.Nifti1Image(data.T, np.diag([-0.5, -0.5, 2.0, 1.0]))
    image.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nibabel.save(image, path)
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    back = read_volume(path)
    assert back.array.dtype == itk.dtype and np.allclose(back.array, itk)
    assert np.allclose(back.array, data * 0.5 - 10.0)
    assert back.geometry.almost_equal(Geometry((0.5, 0.5, 2.0)), 1e-6)


def test_geometry_tolerance_scales_with_voxel_size():
    """5 nm and 8 nm EM grids differ (an absolute 1e-5 mm tolerance would call them equal)."""
    nm = 1e-6
    assert not Geometry((5 * nm,) * 3).almost_equal(Geometry((8 * nm,) * 3))
    assert Geometry((5 * nm,) * 3).almost_equal(Geometry((5 * nm * (1 + 1e-6),) * 3))
    assert Geometry((1.0, 1.0, 5.0)).almost_equal(Geometry((1.0, 1.0, 5.0), (1e-5, 0, 0)))
    assert not Geometry((1.0, 1.0, 5.0)).almost_equal(Geometry((1.0, 1.0, 5.0), (0.01, 0, 0)))
    assert "origin" in Geometry().describe_difference(Geometry(origin=(0, 0, 1)))


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_header_overwrite_keeps_neighbours(tmp_path, suffix):
    """Overwriting x.mhd replaces only its own data file; x_label.* beside it is untouched."""
    neighbour = write_volume(tmp_path / f"x_label{suffix}", Volume(_array("uint8", seed=5), Geometry()))
    first = write_volume(tmp_path / f"x{suffix}", Volume(_array("int16", seed=1), Geometry()))
    second = write_volume(first, Volume(_array("int16", seed=2), Geometry()))
    assert np.array_equal(read_volume(second).array, _array("int16", seed=2))
    assert np.array_equal(read_volume(neighbour).array, _array("uint8", seed=5))
    assert len(list(tmp_path.iterdir())) == 4  # two headers, two data files: the old data file is gone


def test_outputs_are_readable_by_others(tmp_path):
    """Atomic writes go through mkstemp (0600); the final file gets the usual umask-based mode."""
    umask = os.umask(0o022)
    try:
        file = write_volume(tmp_path / "v.nii.gz", Volume(_array("int16"), Geometry()))
        folder = write_volume(tmp_path / "dcm", Volume(_array("int16"), Geometry()), folder_format="dicom")
    finally:
        os.umask(umask)
    assert file.stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())


def test_nifti_with_trailing_unit_axes(tmp_path):
    """(X, Y, Z, 1) NIfTI files (common converter output) read as (Z, Y, X)."""
    import nibabel

    data = _array("int16", shape=(5, 6, 7))
    nibabel.save(nibabel.Nifti1Image(data.T[..., None], np.eye(4)), tmp_path / "t.nii.gz")
    back = read_volume(tmp_path / "t.nii.gz")
    assert back.array.shape == (5, 6, 7) and np.array_equal(back.array, data)


def test_2d_header_matches_read_shape(tmp_path):
    path = write_volume(tmp_path / "s.nrrd", Volume(_array("int16", shape=(1, 6, 7)), Geometry()))
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(_array("int16", shape=(6, 7))), str(path))  # a true 2D file
    shape, _ = read_image_header(path)
    assert shape == read_volume(path).array.shape == (1, 6, 7)


def test_sheared_direction_is_rejected():
    with pytest.raises(ValueError, match="orthonormal"):
        Geometry(direction=((1, 0.5, 0), (0, 1, 0), (0, 0, 1)))


def test_tiff_without_geometry_and_with_imagej_units(tmp_path):
    import tifffile

    stack = _array("uint8", shape=(4, 10, 12))
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    plain = read_volume(tmp_path / "plain.tif")
    assert plain.meta["stored_geometry"] is False and plain.geometry == Geometry()
    tifffile.imwrite(tmp_path / "dpi.tif", stack, photometric="minisblack", resolution=(72, 72),
                     resolutionunit="INCH")
    assert read_volume(tmp_path / "dpi.tif").meta["stored_geometry"] is False  # print dpi is no voxel size
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.005, 1 / 0.005),
                     metadata={"spacing": 0.03, "unit": "micron"})
    imagej = read_volume(tmp_path / "ij.tif")
    assert imagej.meta["stored_geometry"] is True
    assert np.allclose(imagej.geometry.spacing, (5e-6, 5e-6, 3e-5), rtol=1e-6)


def test_hdf5_and_png_without_geometry(tmp_path):
    import h5py
    from PIL import Image

    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["main"] = _array("uint8")
    Image.fromarray(_array("uint8", shape=(10, 12))).save(tmp_path / "raw.png")
    for name in ("raw.h5", "raw.png"):
        volume = read_volume(tmp_path / name)
        assert volume.meta["stored_geometry"] is False and volume.geometry == Geometry()
