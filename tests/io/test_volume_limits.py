"""The bound on a volume's bytes (``MEDSAM_MAX_VOLUME_BYTES``), checked from the header before reading."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medsam_kit.io import Volume, VolumeTooLargeError, max_volume_bytes, read_image_header, read_volume, write_volume
from medsam_kit.io.validate import MAX_VOLUME_BYTES, MAX_VOLUME_BYTES_ENV


def _declared_hdf5(path, shape, dtype="f4"):
    """An HDF5 file declaring ``shape`` in a chunked dataset with nothing written (a few KiB on disk)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("main", shape=shape, dtype=dtype, chunks=True)
    return path


def test_default_bound_and_environment_override(monkeypatch):
    monkeypatch.delenv(MAX_VOLUME_BYTES_ENV, raising=False)
    assert max_volume_bytes() == MAX_VOLUME_BYTES == 16 * 2**30
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "4096")
    assert max_volume_bytes() == 4096
    for bad in ("lots", "-1", "0"):
        monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, bad)
        with pytest.raises(ValueError, match=MAX_VOLUME_BYTES_ENV):
            max_volume_bytes()


def test_hdf5_declaring_two_to_the_forty_voxels_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_VOLUME_BYTES_ENV, raising=False)
    path = _declared_hdf5(tmp_path / "huge.h5", (2**14, 2**13, 2**13))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(VolumeTooLargeError) as info:
        read_volume(path)
    message = str(info.value)
    assert str(path) in message and "'main'" in message and "4096.0 GiB" in message and MAX_VOLUME_BYTES_ENV in message
    assert info.value.nbytes == 2**42 and info.value.shape == (2**14, 2**13, 2**13)


def test_hdf5_of_1024_cubed_float32_against_a_small_bound(tmp_path, monkeypatch):
    path = _declared_hdf5(tmp_path / "cube.h5", (1024, 1024, 1024))
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, str(2**30))  # the file's 4 GiB is over 1 GiB
    with pytest.raises(ValueError, match=r"cube.h5 \(dataset 'main'\): declares \[1024, 1024, 1024\] voxels"):
        read_volume(path)
    small = write_volume(tmp_path / "small.h5", Volume(np.ones((4, 8, 8), np.float32)))
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, str(4 * 8 * 8 * 4))  # exactly the bound: read
    assert read_volume(small).array.shape == (4, 8, 8)
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, str(4 * 8 * 8 * 4 - 1))
    with pytest.raises(VolumeTooLargeError):
        read_volume(small)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif"])
def test_other_formats_follow_the_same_bound(tmp_path, monkeypatch, suffix):
    path = write_volume(tmp_path / f"vol{suffix}", Volume(np.ones((2, 4, 3, 5), np.int16)))  # 240 bytes
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "240")
    assert read_volume(path).array.shape == (2, 4, 3, 5)
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "239")
    readers = (read_volume,) if suffix == ".tif" else (read_image_header, read_volume)
    for reader in readers:
        with pytest.raises(VolumeTooLargeError, match=f"{path.name}: declares"):
            reader(path)
