"""The adapter interface: a raw dataset folder → :class:`CaseRecord` list → :class:`Case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.case import Case
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.io.geometry import Geometry


@dataclass
class CaseRecord:
    """Where a case's files are, before anything is read (cheap to list, used by checks).

    Attributes:
        case_id: unique id within the dataset.
        image_files: one entry per channel, in :attr:`DatasetSpec.channel_names` order (several
            entries may share one file, e.g. a 4D file or an HDF5 file with keys).
        label_file: label map file, or None for unlabeled cases.
        subset: where it came from in the raw layout ('training', 'testing', 'unlabeled', ...).
        meta: dataset-specific facts known without reading pixels (ACDC Info.cfg values, ...).
        loader: reads the files into a :class:`Case`.
        label_loader: reads only the label ``(Z, Y, X)`` uint8 and its geometry; None means
            :meth:`load_label` falls back to a full :meth:`load`.
    """

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None
    subset: str
    loader: Callable[[CaseRecord], Case]
    meta: dict = field(default_factory=dict)
    label_loader: Callable[[CaseRecord], tuple[np.ndarray, Geometry]] | None = None

    def load(self) -> Case:
        return self.loader(self)

    def load_label(self) -> tuple[np.ndarray, Geometry]:
        """The label map ``(Z, Y, X)`` and its geometry without reading the images (when possible)."""
        if self.label_file is None:
            raise ValueError(f"case {self.case_id} has no label file")
        if self.label_loader is not None:
            return self.label_loader(self)
        case = self.load()
        return case.label, case.geometry

    @property
    def labeled(self) -> bool:
        return self.label_file is not None


class DatasetAdapter:
    """Translate one raw layout into cases. Subclasses set ``name`` and implement the methods."""

    name: str = ""

    def spec(self, root: Path) -> DatasetSpec:
        """The dataset's spec (may depend on the folder, e.g. nnU-Net ``dataset.json`` or BraTS naming)."""
        raise NotImplementedError

    def discover(self, root: Path) -> list[CaseRecord]:
        """All cases under ``root`` sorted by id; raises ``FileNotFoundError`` naming what is missing."""
        raise NotImplementedError
