"""ACDC cardiac cine MRI: ``training/`` and ``testing/`` folders of ``patientNNN/``.

Raw layout (as released by the challenge)::

    ROOT/training/patient001/Info.cfg               ED: 1, ES: 12, Group: DCM, Height, NbFrame, Weight
    ROOT/training/patient001/patient001_4d.nii.gz   all cine frames, array (T, Z, Y, X)
    ROOT/training/patient001/patient001_frame01.nii.gz      ED frame (XX = 1-based frame number)
    ROOT/training/patient001/patient001_frame01_gt.nii.gz   its labels 0 bg, 1 RV, 2 MYO, 3 LV
    ROOT/training/patient001/patient001_frame12.nii.gz      ES frame (+ _gt)
    ROOT/testing/patient101/...

``ROOT`` may also be a bare folder of ``patientNNN/`` folders (e.g. ``ROOT/training`` itself).
One record per patient and phase (ED, ES), case id ``patientNNN_frameXX``; a frame without its
``_gt`` file is an unlabeled case. Record meta: patient, phase, frame, group, height, weight,
nb_frames, ed_frame, es_frame, cine_file (path of the 4D file as str, or None).
:meth:`AcdcAdapter.cine_frames` reads the 4D file as extra unlabeled frames (semi-supervised training).
"""

from __future__ import annotations

import re
from pathlib import Path

from medsam_kit.data.adapters._loading import (
    build_case,
    check_same_grid,
    find_volume,
    missing_reason,
    read_label,
    stored_geometry,
    visible,
)
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem, check_unique_ids, report
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import ACDC, DatasetSpec
from medsam_kit.io import Geometry, read_image_header, read_volume

_PATIENT = re.compile(r"^patient\d+$", re.IGNORECASE)
_SUBSETS = ("training", "testing")
# Info.cfg key (lower case) -> (meta name, type). Other keys are kept as strings under meta['info'].
_INFO_FIELDS = {"ed": ("ed_frame", int), "es": ("es_frame", int), "group": ("group", str),
                "height": ("height", float), "weight": ("weight", float), "nbframe": ("nb_frames", int)}


def parse_info_cfg(path: Path) -> dict:
    """Parse an ACDC ``Info.cfg`` (``Key: value`` lines; order, spacing and key case are free).

    Returns:
        ``{"ed_frame": int, "es_frame": int, "group": str, "height": float, "weight": float,
        "nb_frames": int, "info": {raw key: raw value}}``; keys absent from the file are absent
        here, except ED and ES, which are required.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ED/ES missing, or a value of the wrong type (names the file and the line).
    """
    if not path.is_file():
        reason = missing_reason(path) if not path.exists() else "not a file"
        raise FileNotFoundError(f"{path}: {reason}; every ACDC patient folder needs its Info.cfg (ED/ES frames)")
    result: dict = {"info": {}}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue  # blank or comment-like lines carry nothing
        result["info"][key] = value
        field = _INFO_FIELDS.get(key.lower().replace(" ", ""))
        if field is None:
            continue
        name, kind = field
        try:
            # Frame numbers are sometimes written as '1.0'; int(float()) accepts both.
            result[name] = int(float(value)) if kind is int else kind(value)
        except ValueError:
            raise ValueError(f"{path}:{number}: {key} must be {kind.__name__}, found {value!r}") from None
    for name, key in (("ed_frame", "ED"), ("es_frame", "ES")):
        if name not in result:
            raise ValueError(f"{path}: no '{key}:' line; Info.cfg must give the {key} frame number "
                             f"(e.g. '{key}: 1')")
    if result["ed_frame"] == result["es_frame"]:
        raise ValueError(f"{path}: ED and ES are both frame {result['ed_frame']}; they must be different "
                         f"frames")
    return result


class AcdcAdapter(DatasetAdapter):
    """Reads the ACDC release (training + testing) into ED/ES frame cases."""

    name = "acdc"

    def spec(self, root: Path) -> DatasetSpec:
        return ACDC

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """ED and ES frame records of every patient under ``root``, sorted by case id.

        Args:
            root: the ACDC folder.
            problems: None for strict discovery; a list collects bad patients / frames, which are
                skipped (see :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).

        Raises:
            FileNotFoundError: ``root`` holds no patient folders, or (strict) a patient lacks
                Info.cfg or an ED/ES frame file.
            ValueError: (strict) a bad Info.cfg, or a patient in both training/ and testing/.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected ACDC training/ and testing/ folders)")
        folders = self._patient_folders(root)
        if not folders:
            raise FileNotFoundError(f"{root}: no ACDC patient folders found (expected training/patientNNN/ "
                                    f"and testing/patientNNN/, or patientNNN/ folders directly)")
        records = []
        for subset, folder in folders:
            records.extend(self._patient_records(folder, subset, problems))
        check_unique_ids(records, problems)
        return sorted(records, key=lambda r: r.case_id)

    def cine_frames(self, record: CaseRecord, include_labeled: bool = False) -> list[Case]:
        """All frames of a patient's 4D cine file as unlabeled cases (extra unlabeled data).

        Call once per patient (with either of its ED/ES records). The 4D file is read once.

        Args:
            record: an ACDC record from :meth:`discover` (gives ``meta['cine_file']``).
            include_labeled: also return the ED and ES frames (as unlabeled cases).

        Returns:
            One :class:`Case` per frame, image ``(1, Z, Y, X)`` in the 4D file's dtype, label None,
            case id ``patientNNN_frameXX`` (1-based), ``meta['phase']`` 'ED'/'ES'/None.

        Raises:
            FileNotFoundError: the patient has no ``_4d`` file.
            ValueError: the 4D file is not on the grid of the ED/ES frame files.
        """
        cine = record.meta.get("cine_file")
        if cine is None:
            raise FileNotFoundError(f"case {record.case_id}: no {record.meta['patient']}_4d.nii.gz in "
                                    f"{Path(record.image_files[0]).parent}; cine frames need the 4D file")
        volume = read_volume(cine)
        frames = volume.array if volume.array.ndim == 4 else volume.array[None]
        frame_header = read_image_header(record.image_files[0])
        if frame_header is not None:
            check_cine(record, volume.array.shape, stored_geometry(volume), *frame_header)
        patient, ed, es = record.meta["patient"], record.meta["ed_frame"], record.meta["es_frame"]
        cases = []
        for index, frame in enumerate(frames, start=1):
            if index in (ed, es) and not include_labeled:
                continue
            phase = "ED" if index == ed else "ES" if index == es else None
            meta = {k: v for k, v in record.meta.items() if k not in ("phase", "frame")}
            meta.update(dataset=ACDC.name, subset=record.subset, phase=phase, frame=index,
                        image_files=[str(cine)], label_file=None, source="cine")
            cases.append(Case(f"{patient}_frame{index:02d}", frame[None], volume.geometry, ACDC.channel_names,
                              None, dict(ACDC.label_names), meta))
        return cases

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _patient_folders(root: Path) -> list[tuple[str, Path]]:
        def patients(folder: Path) -> list[Path]:
            return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p) and _PATIENT.match(p.name))

        found = []
        for subset in _SUBSETS:
            if (root / subset).is_dir():
                found += [(subset, p) for p in patients(root / subset)]
        if not found:
            # A bare folder of patients: name the subset after it when it is 'training'/'testing'.
            subset = root.name.lower() if root.name.lower() in _SUBSETS else "patients"
            found = [(subset, p) for p in patients(root)]
        return found

    def _patient_records(self, folder: Path, subset: str,
                         problems: list[DiscoveryProblem] | None) -> list[CaseRecord]:
        patient = folder.name
        try:
            info = parse_info_cfg(folder / "Info.cfg")
        except (OSError, ValueError) as exc:
            report(problems, exc, folder / "Info.cfg", patient)
            return []
        cine = find_volume(folder, f"{patient}_4d")
        base_meta = {"patient": patient, "group": info.get("group"), "height": info.get("height"),
                     "weight": info.get("weight"), "nb_frames": info.get("nb_frames"),
                     "ed_frame": info["ed_frame"], "es_frame": info["es_frame"],
                     "cine_file": str(cine) if cine is not None else None,
                     "info": info["info"]}
        records = []
        for phase, frame in (("ED", info["ed_frame"]), ("ES", info["es_frame"])):
            stem = f"{patient}_frame{frame:02d}"
            image = find_volume(folder, stem)
            if image is None:
                present = sorted(p.name for p in folder.iterdir() if "_frame" in p.name)
                report(problems, FileNotFoundError(
                    f"{folder}: Info.cfg gives {phase} = frame {frame} but {stem}.nii.gz is missing (frame "
                    f"files present: {', '.join(present) or 'none'})"), folder / f"{stem}.nii.gz", stem)
                continue
            label = find_volume(folder, f"{stem}_gt")
            meta = {**base_meta, "phase": phase, "frame": frame}
            if label is None:  # the ACDC release ships a _gt for every ED/ES frame: note the gap for `check`
                meta["expected_label"] = str(folder / f"{stem}_gt.nii.gz")
            records.append(CaseRecord(case_id=stem, image_files=(image,), label_file=label, subset=subset,
                                      loader=_load_frame, meta=meta,
                                      label_loader=read_label))
        return records


def _load_frame(record: CaseRecord) -> Case:
    return build_case(record, ACDC)


def check_cine(record: CaseRecord, cine_shape: tuple, cine_geometry: Geometry | None,
               frame_shape: tuple, frame_geometry: Geometry | None) -> None:
    """Raise ``ValueError`` unless a patient's 4D cine file agrees with its Info.cfg and frame files.

    The cine ``(T, Z, Y, X)`` must hold ``NbFrame`` frames (when Info.cfg gives it), including the ED
    and ES frames, on the ``(Z, Y, X)`` grid of the frame files. A 3D cine is one frame (ITK drops
    a trailing unit time axis). Used by :meth:`AcdcAdapter.cine_frames` and by ``medsam-kit check``.

    Args:
        record: an ACDC record (``meta['cine_file']``, ``nb_frames``, ``ed_frame``, ``es_frame``).
        cine_shape, cine_geometry: of the cine file (geometry None when not stored).
        frame_shape, frame_geometry: of the record's frame file.
    """
    cine, meta = Path(record.meta["cine_file"]), record.meta
    if len(cine_shape) not in (3, 4):
        raise ValueError(f"{cine}: expected a 4D cine (T, Z, Y, X), found shape {tuple(cine_shape)}")
    frames = 1 if len(cine_shape) == 3 else cine_shape[0]
    if meta.get("nb_frames") is not None and frames != meta["nb_frames"]:
        raise ValueError(f"{cine}: holds {frames} frame(s) but Info.cfg gives NbFrame: {meta['nb_frames']}; "
                         f"fix NbFrame or replace the cine file")
    if max(meta["ed_frame"], meta["es_frame"]) > frames:
        raise ValueError(f"{cine}: holds {frames} frame(s) but Info.cfg gives ED: {meta['ed_frame']}, "
                         f"ES: {meta['es_frame']}")
    check_same_grid(record.case_id, cine, tuple(cine_shape)[-3:], cine_geometry, Path(record.image_files[0]),
                    tuple(frame_shape)[-3:], frame_geometry)
