"""The adapter interface: a raw dataset folder → :class:`CaseRecord` list → :class:`Case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
        binarize_label: the raw label file is binarised on loading (> 0 becomes 1: EM 0/255
            masks and instance ids), so any non-negative whole number is a valid raw value.
    """

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None
    subset: str
    loader: Callable[[CaseRecord], Case]
    meta: dict = field(default_factory=dict)
    label_loader: Callable[[CaseRecord], tuple[np.ndarray, Geometry]] | None = None
    binarize_label: bool = False

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


class DiscoveryProblem(NamedTuple):
    """A bad case (or file) met by a non-strict :meth:`DatasetAdapter.discover`, which skipped it.

    Attributes:
        file: the file or folder at fault (None when it is about the dataset as a whole).
        case_id: the case it belongs to, when known.
        message: the text strict discovery would have raised (it names the file).
    """

    file: Path | None
    case_id: str | None
    message: str


class DatasetAdapter:
    """Translate one raw layout into cases. Subclasses set ``name`` and implement the methods.

    Discovery has two modes. Strict (``problems=None``, for loading and training) raises on the
    first bad case, so nothing trains on a half-read dataset. Non-strict (``problems=[]``, for
    ``medsam-kit check``) appends a :class:`DiscoveryProblem` per bad case, leaves that case out
    and goes on, and keeps records with duplicate ids (the checker reports each pair). Errors
    about the folder as a whole (no such folder, no cases, unreadable ``dataset.json``) raise in
    both modes.
    """

    name: str = ""

    def spec(self, root: Path) -> DatasetSpec:
        """The dataset's spec (may depend on the folder, e.g. nnU-Net ``dataset.json`` or BraTS naming)."""
        raise NotImplementedError

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """All cases under ``root`` sorted by id.

        Args:
            root: the raw dataset folder.
            problems: None for strict discovery (raise on the first bad case); a list to collect
                bad cases into and skip them (see the class docstring).

        Raises:
            FileNotFoundError / ValueError: naming what is missing or wrong.
        """
        raise NotImplementedError


def report(problems: list[DiscoveryProblem] | None, error: Exception, file: Path | None,
           case_id: str | None = None) -> None:
    """Raise ``error`` in strict discovery (``problems`` None), else record it; the caller then skips the case."""
    if problems is None:
        raise error
    problems.append(DiscoveryProblem(file, case_id, str(error)))


def check_unique_ids(records: list[CaseRecord], problems: list[DiscoveryProblem] | None) -> None:
    """Strict discovery raises ``ValueError`` naming both files of the first repeated case id.

    Non-strict discovery keeps the records: the checker reports every duplicate with both files.
    """
    if problems is not None:
        return
    first: dict[str, CaseRecord] = {}
    for record in records:
        other = first.setdefault(record.case_id, record)
        if other is not record:
            raise ValueError(f"case id {record.case_id!r} is used by both {other.image_files[0]} ({other.subset}) "
                             f"and {record.image_files[0]} ({record.subset}); case ids must be unique: rename "
                             f"or remove one of them")
