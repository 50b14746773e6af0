"""Electron microscopy (mitochondria): Lucchi TIFF stacks, MitoEM slice folders, HDF5 volumes.

A root may hold any mix of three forms (case id = X / case):

* (a) Lucchi/EPFL stacks: ``ROOT/X.tif`` with ``ROOT/X_groundtruth.tif`` (uint8 (Z, Y, X), mask
  0/255); a ``.tif`` without ground truth is an unlabeled case.
* (b) MitoEM slice folders: ``ROOT/<case>/im/im0000.png ...`` with optional
  ``ROOT/<case>/mito/seg0000.tif ...`` (uint16 instance ids).
* (c) HDF5: ``ROOT/<case>_im.h5`` with optional ``ROOT/<case>_mito.h5`` (dataset key ``main``, or the
  file's only dataset).

A root whose sub-folders are such roots (``OUT/lucchi/``, ``OUT/mitoem/``) is read too: case ids
become ``lucchi/training``, ``mitoem/train``. ``meta['domain']`` is the folder a case came from
(the source/target domain of SAMDA-style adaptation); ``meta['role']`` is 'train' / 'test' / None
from the name (``train*`` → train; ``test*``, ``val*`` → test), used by the 'em' split protocol.

Labels are semantic: any value > 0 (255 in Lucchi masks, instance ids in MitoEM) becomes 1, uint8.
Images keep their dtype (uint8). Geometry is in mm. Files written by medsam_kit carry their
geometry; the public releases carry none, and a grid read without geometry gets the source's
voxel size instead of a meaningless 1 mm: 5 nm isotropic for TIFF stacks (Lucchi), 30 × 8 × 8 nm
(z, y, x) for slice folders and HDF5 (MitoEM). ``EmAdapter(default_spacing_nm=(z, y, x))``
overrides both.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from medsam_kit.data.adapters._loading import (
    check_same_grid,
    geometry_stored,
    listed_file,
    read_scalar,
    require_finite,
    stored_geometry,
    to_label,
    visible,
)
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem, check_unique_ids, report
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import EM, DatasetSpec
from medsam_kit.io import Geometry

_TIFF = (".tif", ".tiff")
_HDF5 = (".h5", ".hdf5")
_GT_SUFFIX = "_groundtruth"
_LABEL_DIRS = ("mito", "labels")
# Voxel sizes (z, y, x) in nm of the public releases, used when files carry no geometry.
LUCCHI_SPACING_NM = (5.0, 5.0, 5.0)
MITOEM_SPACING_NM = (30.0, 8.0, 8.0)
_NM_TO_MM = 1e-6


def em_role(name: str) -> str | None:
    """'train' for ``training``/``train*`` names, 'test' for ``test*``/``val*`` names, else None."""
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    if any(t.startswith("train") for t in tokens):
        return "train"
    if any(t.startswith(("test", "val")) for t in tokens):
        return "test"
    return None


def _strip(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    return next((name[: -len(s)] for s in suffixes if lower.endswith(s)), None)


class EmAdapter(DatasetAdapter):
    """Reads EM stacks in the Lucchi, MitoEM-slice and HDF5 forms (several domains per root allowed).

    Args:
        default_spacing_nm: ``(z, y, x)`` voxel size in nm for files without stored geometry;
            None uses the source defaults (see module docstring).
    """

    name = "em"

    def __init__(self, default_spacing_nm: tuple[float, float, float] | None = None) -> None:
        self.default_spacing_nm = default_spacing_nm

    def spec(self, root: Path) -> DatasetSpec:
        return EM

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """Cases of ``root`` and of its sub-folder roots, sorted by case id.

        Args:
            root: the EM folder.
            problems: None for strict discovery; a list collects bad cases, which are skipped
                (see :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).

        Raises:
            FileNotFoundError: nothing EM-like under ``root``, or (strict) a ground truth without
                its image.
            ValueError: (strict) two cases get the same id.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected EM .tif stacks, <case>/im/ folders or "
                                    f"<case>_im.h5 files)")
        if (root / "im").is_dir():  # the root is itself one MitoEM case folder
            records = [self._slice_record(root, prefix="", domain=root.parent.name)]
        else:
            records = self._discover_flat(root, domain=root.name, prefix="", problems=problems)
            subs = sorted(p for p in root.iterdir() if p.is_dir() and visible(p) and not (p / "im").is_dir())
            for sub in subs:
                records += self._discover_flat(sub, domain=sub.name, prefix=f"{sub.name}/", problems=problems)
        if not records and not problems:
            raise FileNotFoundError(f"{root}: no EM cases found; expected X.tif (+ X_groundtruth.tif), "
                                    f"<case>/im/ slice folders (+ <case>/mito/) or <case>_im.h5 "
                                    f"(+ <case>_mito.h5), directly or one folder level down")
        check_unique_ids(records, problems)  # e.g. a .tif stack and a slice folder of one name
        return sorted(records, key=lambda r: r.case_id)

    # ----------------------------------------------------------------- helpers
    def _discover_flat(self, folder: Path, domain: str, prefix: str,
                       problems: list[DiscoveryProblem] | None) -> list[CaseRecord]:
        files = [p for p in sorted(folder.iterdir()) if listed_file(p)]
        records = []
        # (a) TIFF stacks
        stacks = {stem: p for p in files if (stem := _strip(p.name, _TIFF)) is not None}
        is_truth = {stem: stem.lower().endswith(_GT_SUFFIX) for stem in stacks}
        truths = {stem[: -len(_GT_SUFFIX)]: p for stem, p in stacks.items() if is_truth[stem]}
        images = {stem: p for stem, p in stacks.items() if not is_truth[stem]}
        self._no_orphans(truths, images, prefix, "ground truth", ".tif", problems)
        for stem, path in images.items():
            records.append(self._record(prefix, stem, path, truths.get(stem), "tiff-stack", domain))
        # (c) HDF5 pairs
        h5 = {stem: p for p in files if (stem := _strip(p.name, _HDF5)) is not None}
        h5_images = {s[: -len("_im")]: p for s, p in h5.items() if s.endswith("_im")}
        h5_labels = {s[: -len("_mito")]: p for s, p in h5.items() if s.endswith("_mito")}
        self._no_orphans(h5_labels, h5_images, prefix, "_mito label", "_im.h5", problems)
        for stem, path in h5_images.items():
            records.append(self._record(prefix, stem, path, h5_labels.get(stem), "hdf5", domain))
        # (b) slice folders
        for case in sorted(p for p in folder.iterdir() if p.is_dir() and visible(p) and (p / "im").is_dir()):
            records.append(self._slice_record(case, prefix, domain))
        return records

    def _slice_record(self, case: Path, prefix: str, domain: str) -> CaseRecord:
        # A broken link to the label folder is kept: loading then fails on it instead of the case
        # silently losing its label.
        label = next((case / d for d in _LABEL_DIRS if (case / d).is_dir() or (case / d).is_symlink()), None)
        return self._record(prefix, case.name, case / "im", label, "slices", domain)

    @staticmethod
    def _no_orphans(labels: dict[str, Path], images: dict[str, Path], prefix: str, what: str,
                    expected: str, problems: list[DiscoveryProblem] | None) -> None:
        for stem in sorted(set(labels) - set(images)):
            label = labels[stem]
            report(problems, FileNotFoundError(f"{label.parent}: {what} {label.name} has no image "
                                               f"{stem}{expected}; add the image or remove the label"),
                   label, f"{prefix}{stem}")

    def _record(self, prefix: str, stem: str, image: Path, label: Path | None, form: str,
                domain: str) -> CaseRecord:
        source_default = LUCCHI_SPACING_NM if form == "tiff-stack" else MITOEM_SPACING_NM
        default = self.default_spacing_nm or source_default
        loader = functools.partial(_load, default_spacing_nm=tuple(default))
        return CaseRecord(f"{prefix}{stem}", (image,), label, stem, loader,
                          {"form": form, "domain": domain, "stack": stem, "role": em_role(stem)},
                          binarize_label=True)


def _load(record: CaseRecord, default_spacing_nm: tuple[float, float, float]) -> Case:
    """Image ``(1, Z, Y, X)`` in the file's dtype, label ``(Z, Y, X)`` uint8 {0, 1}."""
    image_file = record.image_files[0]
    image = read_scalar(image_file)
    require_finite(image.array, image_file)
    geometry, stored = image.geometry, geometry_stored(image)
    label = None
    if record.label_file is not None:
        volume = read_scalar(record.label_file)
        check_same_grid(record.case_id, record.label_file, volume.spatial_shape, stored_geometry(volume),
                        image_file, image.spatial_shape, stored_geometry(image))
        label = to_label(volume.array, record.label_file, binarize=record.binarize_label)
    if not stored:
        # The reader's identity grid (1 mm) is no EM grid: use the source's voxel size.
        z, y, x = default_spacing_nm
        geometry = Geometry(spacing=(x * _NM_TO_MM, y * _NM_TO_MM, z * _NM_TO_MM))
    meta = {"dataset": EM.name, "subset": record.subset, "image_files": [str(image_file)],
            "label_file": str(record.label_file) if record.label_file is not None else None,
            "geometry_source": "file" if stored else "default", **record.meta}
    return Case(record.case_id, image.array[None], geometry, EM.channel_names, label, dict(EM.label_names), meta)
