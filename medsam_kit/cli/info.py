"""``medsam-kit info [PATH]``: what is installed, or what a volume file holds."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from medsam_kit import __version__
from medsam_kit.io import VOLUME_SUFFIXES, read_volume


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show the installation, or the shape/geometry/intensities of a volume",
        description="Without PATH: versions, devices and supported formats. With PATH (a volume file, "
                    "DICOM series folder or slice folder): array shape (Z, Y, X), dtype, spacing/origin "
                    "(x, y, z, LPS mm), direction and intensity range.",
    )
    parser.add_argument("path", nargs="?", type=Path, help="volume file or folder to describe")
    parser.add_argument("--key", help="HDF5 dataset key or DICOM series UID")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.path is None:
        import torch

        cuda = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
        print(f"medsam_kit {__version__}  python {platform.python_version()}  torch {torch.__version__} ({cuda})")
        print(f"volume formats: {', '.join(VOLUME_SUFFIXES)}, DICOM series folders, PNG/TIFF slice folders")
        from medsam_kit.data.phantoms import GENERATORS

        print(f"phantom generators: {', '.join(GENERATORS)}")
        return 0
    volume = read_volume(args.path, key=args.key)
    g, array = volume.geometry, volume.array
    finite = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, bool)
    print(f"path       {args.path}")
    print(f"shape      {array.shape}  ({'C or T, ' if array.ndim == 4 else ''}Z, Y, X)  dtype {array.dtype}")
    if volume.meta.get("stored_geometry", True):
        print(f"spacing    {tuple(round(v, 9) for v in g.spacing)} mm (x, y, z)")
        print(f"origin     {tuple(round(v, 6) for v in g.origin)} mm (LPS)")
    else:
        print("spacing    not stored in the file (read as 1 mm, origin 0, identity direction)")
    print(f"direction  {np.round(g.direction_matrix, 4).tolist()} ({'right' if g.is_right_handed else 'left'}-handed)")
    if finite.any():
        values = array[finite]
        print(f"intensity  min {values.min():.6g}  max {values.max():.6g}  mean {values.mean():.6g}")
    if not finite.all():
        print(f"non-finite {int((~finite).sum())} voxels are NaN/Inf")
    return 0
