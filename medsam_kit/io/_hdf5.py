"""HDF5 volumes (MitoEM / CREMI style) through h5py; geometry in dataset attributes.

Attributes read: ``spacing`` / ``origin`` / ``direction`` in this package's convention (spacing
and origin in **(x, y, z)** mm order — files written by other tools may store (z, y, x); check
with ``medsam-kit info``), or CREMI's ``resolution`` in (z, y, x) order. Without either, the
identity grid is returned with ``meta["stored_geometry"] = False``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from medsam_kit.io.geometry import Geometry
from medsam_kit.io.validate import check_volume_size
from medsam_kit.io.volume import Volume


def dataset_keys(path: Path) -> list[str]:
    keys: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
    return keys


def read(path: Path, key: str | None = None) -> Volume:
    with h5py.File(path, "r") as f:
        if key is None:
            keys = dataset_keys(path)
            if len(keys) != 1:
                raise ValueError(f"{path}: holds datasets {keys}; pass key= to choose one")
            key = keys[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise KeyError(f"{path}: no dataset '{key}' (found {dataset_keys(path)})")
        dataset = f[key]
        # h5py allocates the declared shape before reading: a tiny file can declare terabytes
        check_volume_size(dataset.shape, dataset.dtype.itemsize, f"{path} (dataset '{key}')")
        array = dataset[()]
        attrs = dataset.attrs
        if "spacing" in attrs:
            geometry = Geometry(
                spacing=tuple(np.asarray(attrs["spacing"], float)),
                origin=tuple(np.asarray(attrs.get("origin", (0.0, 0.0, 0.0)), float)),
                direction=tuple(map(tuple, np.asarray(attrs.get("direction", np.eye(3)), float).reshape(3, 3))),
            )
        elif "resolution" in attrs:  # CREMI convention: resolution in (z, y, x) nm
            geometry = Geometry(spacing=tuple(np.asarray(attrs["resolution"], float)[::-1]))
        else:
            geometry = None
    return Volume(array, geometry or Geometry(),
                  {"format": "hdf5", "key": key, "stored_geometry": geometry is not None})


def write(path: Path, volume: Volume, key: str = "main") -> None:
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset(key, data=volume.array, compression="gzip", compression_opts=4)
        dataset.attrs["spacing"] = np.asarray(volume.geometry.spacing)
        dataset.attrs["origin"] = np.asarray(volume.geometry.origin)
        dataset.attrs["direction"] = volume.geometry.direction_matrix
