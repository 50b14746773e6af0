"""nnU-Net v2 raw datasets: ``dataset.json`` + ``imagesTr/`` ``labelsTr/`` ``imagesTs/``.

Raw layout (``DatasetXXX_Name/``)::

    dataset.json          channel_names {"0": "T2", "1": "ADC"}, labels {"background": 0, "tumor": 1,
                          "whole": [1, 2]}, numTraining, file_ending ".nii.gz"
    imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz ...   one file per channel (4-digit channel suffix)
    labelsTr/CASE.nii.gz
    imagesTs/CASE_0000.nii.gz ...                     unlabeled (subset 'testing')

The spec comes from ``dataset.json`` (see :func:`spec_from_dataset_json`): channels in the order
of their integer keys; integer labels become ``label_names``; list-valued (region-based) labels
become ``spec.regions``; a label named ``ignore`` becomes ``spec.ignore_label``. The v1 form
(``modality``, ``labels`` {"0": "background"}) is read too. Every training case needs every
channel and its label file (nnU-Net's own contract); test cases need every channel.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from medsam_kit.data.adapters._loading import build_case, read_label, visible
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter
from medsam_kit.data.datasets import DatasetSpec

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def read_dataset_json(root: Path) -> dict:
    """``root/dataset.json`` as a dict (errors name the file)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; an nnU-Net raw dataset needs dataset.json (channel_names, "
                                f"labels, file_ending)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _channels(data: dict, path: Path) -> tuple[str, ...]:
    channels = data.get("channel_names", data.get("modality"))  # v2 name, then v1 name
    if not isinstance(channels, dict) or not channels:
        raise ValueError(f"{path}: 'channel_names' must be a non-empty object like {{\"0\": \"CT\"}}")
    try:
        order = sorted(channels, key=int)
    except ValueError:
        raise ValueError(f"{path}: channel_names keys must be integers, found {list(channels)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise ValueError(f"{path}: channel_names keys must be 0..{len(order) - 1}, found {order}")
    return tuple(str(channels[k]) for k in order)


def _labels(data: dict, path: Path) -> tuple[dict[int, str], dict[str, tuple[int, ...]], int | None]:
    labels = data.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: 'labels' must be a non-empty object like "
                         f"{{\"background\": 0, \"tumor\": 1}}")
    if all(isinstance(v, str) for v in labels.values()):  # v1: {"0": "background", ...}
        try:
            labels = {name: int(value) for value, name in labels.items()}
        except ValueError:
            raise ValueError(f"{path}: v1 'labels' keys must be integers, found {list(labels)}") from None
    names: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    ignore = None
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            if not value or not all(isinstance(v, int) for v in value):
                raise ValueError(f"{path}: region label {name!r} must list integer values, found {value!r}")
            regions[name] = tuple(sorted(set(value)))
        elif isinstance(value, int) and not isinstance(value, bool):
            if value in names:
                raise ValueError(f"{path}: labels {names[value]!r} and {name!r} both have value {value}")
            names[value] = name
            if name.lower() == "ignore":
                ignore = value
        else:
            raise ValueError(f"{path}: label {name!r} must be an integer or a list of integers, "
                             f"found {value!r}")
    if 0 not in names:
        raise ValueError(f"{path}: labels must include background = 0")
    # Region-based datasets often name only the regions; the values inside still occur in the
    # label files, so they get names too (checks compare label files against this value set).
    for values in regions.values():
        for value in values:
            names.setdefault(value, f"label_{value}")
    return dict(sorted(names.items())), regions, ignore


def spec_from_dataset_json(root: Path) -> DatasetSpec:
    """Build the :class:`DatasetSpec` of an nnU-Net raw dataset from its ``dataset.json``.

    Modality: 'CT' when any channel is named CT (nnU-Net applies its CT normalisation to such
    channels), otherwise 'MRI' (per-case z-score, nnU-Net's default for other channel names).
    """
    path = Path(root) / "dataset.json"
    data = read_dataset_json(root)
    channels = _channels(data, path)
    names, regions, ignore = _labels(data, path)
    modality = "CT" if any(c.strip().upper() == "CT" for c in channels) else "MRI"
    return DatasetSpec("nnunet", modality, channels, names, regions=regions, ignore_label=ignore)


class NnUNetAdapter(DatasetAdapter):
    """Reads an nnU-Net v2 raw dataset folder (``DatasetXXX_Name``)."""

    name = "nnunet"

    def spec(self, root: Path) -> DatasetSpec:
        return spec_from_dataset_json(root)

    def discover(self, root: Path) -> list[CaseRecord]:
        """Training cases (labeled, subset 'training') and test cases (unlabeled, 'testing'), sorted by id.

        Raises:
            FileNotFoundError: dataset.json, imagesTr, a channel file or a label file is missing.
            ValueError: bad dataset.json, a channel index not in channel_names, numTraining disagrees,
                or a case id in both imagesTr and imagesTs.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected an nnU-Net DatasetXXX_Name folder)")
        data = read_dataset_json(root)
        spec = spec_from_dataset_json(root)
        ending = str(data.get("file_ending", ".nii.gz"))
        loader = functools.partial(build_case, spec=spec)
        meta = {"dataset_name": data.get("name"), "file_ending": ending}
        if not (root / "imagesTr").is_dir():
            raise FileNotFoundError(f"{root / 'imagesTr'}: missing; an nnU-Net raw dataset keeps its "
                                    f"training images there")
        training = _grouped_channels(root / "imagesTr", ending, len(spec.channel_names))
        records = []
        for case_id, files in training.items():
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.is_file():
                raise FileNotFoundError(f"{label}: missing label of training case {case_id}; every imagesTr "
                                        f"case needs labelsTr/{case_id}{ending}")
            records.append(CaseRecord(case_id, files, label, "training", loader, dict(meta), read_label))
        if (root / "labelsTr").is_dir():
            orphans = sorted(p.name for p in (root / "labelsTr").iterdir()
                             if visible(p) and p.name.endswith(ending)
                             and p.name[: -len(ending)] not in training)
            if orphans:
                raise FileNotFoundError(f"{root / 'labelsTr'}: labels without images in imagesTr: "
                                        f"{', '.join(orphans[:5])}")
        expected = data.get("numTraining")
        if isinstance(expected, int) and expected != len(training):
            raise ValueError(f"{root / 'dataset.json'}: numTraining is {expected} but imagesTr holds "
                             f"{len(training)} cases; fix numTraining or the images")
        if (root / "imagesTs").is_dir():
            testing = _grouped_channels(root / "imagesTs", ending, len(spec.channel_names))
            for case_id, files in testing.items():
                if case_id in training:
                    raise ValueError(f"nnU-Net case id {case_id!r} is in both imagesTr and imagesTs; ids "
                                     f"must be unique")
                records.append(CaseRecord(case_id, files, None, "testing", loader, dict(meta)))
        return sorted(records, key=lambda r: r.case_id)


def _grouped_channels(folder: Path, ending: str, num_channels: int) -> dict[str, tuple[Path, ...]]:
    """``{case: (channel 0 file, channel 1 file, ...)}`` from ``CASE_XXXX<ending>`` files (all required)."""
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and visible(path) and path.name.endswith(ending)):
            continue
        match = _CHANNEL.match(path.name[: -len(ending)])
        if match is None:
            raise ValueError(f"{path}: nnU-Net image names end in a 4-digit channel suffix "
                             f"(CASE_0000{ending})")
        channel = int(match["channel"])
        if channel >= num_channels:
            raise ValueError(f"{path}: channel {channel:04d} but dataset.json declares {num_channels} "
                             f"channel(s)")
        cases.setdefault(match["case"], {})[channel] = path
    grouped = {}
    for case_id, channels in sorted(cases.items()):
        missing = [f"{case_id}_{c:04d}{ending}" for c in range(num_channels) if c not in channels]
        if missing:
            raise FileNotFoundError(f"{folder}: case {case_id} lacks channel file(s) {', '.join(missing)}")
        grouped[case_id] = tuple(channels[c] for c in range(num_channels))
    return grouped
