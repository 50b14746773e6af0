"""Dataset adapters: raw dataset folders → :class:`CaseRecord` lists → :class:`Case` objects.

One adapter per raw layout (docs/design.md §4), chosen by name::

    from medsam_kit.data.adapters import get_adapter, load_cases
    adapter = get_adapter("acdc")
    records = adapter.discover(root)          # cheap: file paths + Info.cfg facts, no pixels
    case = records[0].load()                  # Case: image (C, Z, Y, X), label (Z, Y, X) uint8
    spec = adapter.spec(root)                 # channels, label names, regions
    problems = []
    records = adapter.discover(root, problems)  # non-strict (checks): bad cases listed and skipped

========  =========================================================  ==========================
name      raw layout                                                 spec
========  =========================================================  ==========================
acdc      ``training/`` + ``testing/`` ``patientNNN/`` (ED/ES frames)  ACDC
bhsd      ``images/`` + ``ground truths/`` + ``unlabeled/``            BHSD
brats     ``<CASE>/<CASE>-t1n.nii.gz`` (2023+) or ``_t1`` (2021)        BRATS or BRATS2021
em        Lucchi ``.tif`` stacks, MitoEM slice folders, HDF5           EM
nnunet    ``dataset.json`` + ``imagesTr/`` ``labelsTr/`` ``imagesTs/``  from dataset.json
========  =========================================================  ==========================

``brats2021`` is accepted as another name of ``brats`` (the naming is detected from the files).
"""

from __future__ import annotations

import os
from pathlib import Path

from medsam_kit.data.adapters.acdc import AcdcAdapter
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter
from medsam_kit.data.adapters.bhsd import BhsdAdapter
from medsam_kit.data.adapters.brats import BratsAdapter
from medsam_kit.data.adapters.em import EmAdapter
from medsam_kit.data.adapters.nnunet import NnUNetAdapter
from medsam_kit.data.case import Case

__all__ = ["ADAPTERS", "CaseRecord", "DatasetAdapter", "get_adapter", "list_datasets", "discover_cases",
           "load_cases"]

#: name -> adapter class
ADAPTERS: dict[str, type[DatasetAdapter]] = {
    cls.name: cls for cls in (AcdcAdapter, BhsdAdapter, BratsAdapter, EmAdapter, NnUNetAdapter)
}
# Other names users reach for; each maps to a registered adapter.
_ALIASES = {"brats2021": "brats"}


def list_datasets() -> list[str]:
    """Registered dataset names, sorted ('acdc', 'bhsd', 'brats', 'em', 'nnunet')."""
    return sorted(ADAPTERS)


def get_adapter(name: str) -> DatasetAdapter:
    """A new adapter for dataset ``name`` (case-insensitive; 'brats2021' gives the BraTS adapter).

    Raises:
        ValueError: unknown name (the message lists the choices).
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ADAPTERS:
        choices = ", ".join([*list_datasets(), *sorted(_ALIASES)])
        raise ValueError(f"unknown dataset {name!r}; choose one of {choices}")
    return ADAPTERS[key]()


def discover_cases(name: str, root: str | os.PathLike) -> list[CaseRecord]:
    """Records of every case of dataset ``name`` under ``root`` (no pixels read), sorted by case id."""
    return get_adapter(name).discover(Path(root))


def load_cases(name: str, root: str | os.PathLike, labeled_only: bool = False) -> list[Case]:
    """Load every case of dataset ``name`` under ``root`` into memory (small datasets, tests, demos).

    Args:
        name: registered dataset name.
        root: the raw dataset folder.
        labeled_only: skip cases without a label file.

    Returns:
        Cases sorted by case id.
    """
    return [r.load() for r in discover_cases(name, root) if r.labeled or not labeled_only]
