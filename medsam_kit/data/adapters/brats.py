"""BraTS brain tumour MRI: one folder per case, four co-registered modalities + ``seg``.

Two file namings exist and are told apart from the file names (all cases of a root must agree):

* 2023+ (GLI, MEN, PED, SSA, MET, ... sub-challenges): ``ROOT/<CASE>/<CASE>-{t1n,t1c,t2w,t2f,seg}.nii.gz``,
  CASE like ``BraTS-GLI-00000-000`` (patient ``BraTS-GLI-00000``, timepoint ``000``); ET = 3
  → spec :data:`~medsam_kit.data.datasets.BRATS`.
* 2021 (and 2020): ``ROOT/<CASE>/<CASE>_{t1,t1ce,t2,flair,seg}.nii.gz``, CASE like ``BraTS2021_00000``;
  ET = 4 → spec :data:`~medsam_kit.data.datasets.BRATS2021`.

Case id = folder name; channels in the fixed order of the spec. A case without ``seg`` (validation
data) is unlabeled; a missing modality is a ``FileNotFoundError`` naming the case and modality.
Region masks (WT/TC/ET) come from :func:`medsam_kit.data.regions.region_masks` with the spec.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from medsam_kit.data.adapters._loading import NIFTI_SUFFIXES, build_case, find_volume, read_label, visible
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem, report
from medsam_kit.data.datasets import BRATS, BRATS2021, DatasetSpec

# naming -> (separator between case id and modality, spec)
NAMINGS: dict[str, tuple[str, DatasetSpec]] = {"2023": ("-", BRATS), "2021": ("_", BRATS2021)}
_CASE_2023 = re.compile(r"^(?P<patient>BraTS-(?P<cohort>[A-Za-z]+(?:-[A-Za-z]+)*)-\d+)-(?P<timepoint>\d+)$")


def _present(folder: Path, naming: str) -> list[str]:
    """Modalities (and 'seg') of ``naming`` present in a case folder."""
    sep, spec = NAMINGS[naming]
    names = (*spec.channel_names, "seg")
    return [m for m in names if find_volume(folder, f"{folder.name}{sep}{m}") is not None]


def _case_folders(root: Path, problems: list[DiscoveryProblem] | None = None) -> list[tuple[Path, str]]:
    """``(folder, naming)`` for every sub-folder holding BraTS files of one naming.

    A folder with files of both namings raises ``ValueError``, or with a ``problems`` list is
    recorded there and left out.
    """
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and visible(p)):
        matches = [naming for naming in NAMINGS if _present(folder, naming)]
        if len(matches) > 1:
            report(problems, ValueError(f"{folder}: holds files of both BraTS namings (2023 '-t1n' and 2021 "
                                        f"'_t1'); keep one naming per case"), folder, folder.name)
            continue
        if matches:
            found.append((folder, matches[0]))
    return found


def detect_naming(root: Path, problems: list[DiscoveryProblem] | None = None) -> str:
    """'2023' or '2021', from the file names under ``root`` (``problems``: see :func:`_case_folders`).

    Raises:
        FileNotFoundError: no case folder with BraTS files.
        ValueError: the root mixes both namings.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected BraTS case folders)")
    namings = {naming for _, naming in _case_folders(root, problems)}
    if not namings:
        raise FileNotFoundError(f"{root}: no BraTS case folders found (expected <CASE>/<CASE>-t1n.nii.gz ... "
                                f"or <CASE>/<CASE>_t1.nii.gz ...)")
    if len(namings) > 1:
        raise ValueError(f"{root}: mixes BraTS 2021 (_t1, ET=4) and 2023 (-t1n, ET=3) case folders; their "
                         f"label values differ, so put them in separate roots")
    return namings.pop()


class BratsAdapter(DatasetAdapter):
    """Reads BraTS 2021 or 2023+ case folders (naming detected from the files)."""

    name = "brats"

    def spec(self, root: Path) -> DatasetSpec:
        """:data:`BRATS` (2023+ naming, ET = 3) or :data:`BRATS2021` (ET = 4), detected from file names.

        A case folder holding both namings does not hide the root's naming (discovery reports it).
        """
        return NAMINGS[detect_naming(root, problems=[])][1]

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """One record per case folder, sorted by case id.

        Args:
            root: the BraTS folder.
            problems: None for strict discovery; a list collects bad cases, which are skipped
                (see :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).

        Raises:
            FileNotFoundError: no case folders, or (strict) a case lacks a modality (names case and
                modality).
            ValueError: the root mixes both namings.
        """
        root = Path(root)
        scratch: list[DiscoveryProblem] | None = None if problems is None else []
        naming = detect_naming(root, scratch)  # the loop below reports mixed-naming folders itself
        sep, spec = NAMINGS[naming]
        loader = functools.partial(build_case, spec=spec)
        records = []
        for folder, _ in _case_folders(root, problems):
            case_id = folder.name
            missing = [m for m in spec.channel_names if find_volume(folder, f"{case_id}{sep}{m}") is None]
            if missing:
                present = [m for m in _present(folder, naming) if m != "seg"]
                expected = folder / f"{case_id}{sep}{missing[0]}{NIFTI_SUFFIXES[0]}"
                report(problems, FileNotFoundError(
                    f"BraTS case {case_id}: missing modality {', '.join(missing)} (expected {expected}); found "
                    f"{', '.join(present) or 'none'}; every case needs {', '.join(spec.channel_names)}"),
                    expected, case_id)
                continue
            images = [find_volume(folder, f"{case_id}{sep}{m}") for m in spec.channel_names]
            label = find_volume(folder, f"{case_id}{sep}seg")
            meta = _case_meta(case_id, naming)
            records.append(CaseRecord(case_id, tuple(images), label, root.name, loader, meta, read_label))
        return records


def _case_meta(case_id: str, naming: str) -> dict:
    """Patient / cohort / timepoint: BraTS 2023 ids carry them (several timepoints per patient exist)."""
    match = _CASE_2023.match(case_id) if naming == "2023" else None
    if match:
        return {"naming": naming, "patient": match["patient"], "cohort": match["cohort"].upper(),
                "timepoint": match["timepoint"]}
    cohort = "GLI" if naming == "2021" else None  # BraTS 2021 is adult glioma only
    return {"naming": naming, "patient": case_id, "cohort": cohort, "timepoint": None}
