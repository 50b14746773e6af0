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

from medsam_kit.data.adapters._loading import build_case, listed_file, read_label
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem, check_unique_ids, report
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

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """Training cases (labeled, subset 'training') and test cases (unlabeled, 'testing'), sorted by id.

        Args:
            root: the ``DatasetXXX_Name`` folder.
            problems: None for strict discovery; a list collects bad cases (and a ``numTraining``
                that disagrees), which are skipped (see :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).

        Raises:
            FileNotFoundError: dataset.json or imagesTr is missing; (strict) a channel file or a
                label file is missing.
            ValueError: bad dataset.json; (strict) a channel index not in channel_names, numTraining
                disagrees, or a case id in both imagesTr and imagesTs.
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
        training, training_ids = _grouped_channels(root / "imagesTr", ending, len(spec.channel_names), problems)
        records = []
        for case_id, files in training.items():
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not listed_file(label):
                report(problems, FileNotFoundError(f"{label}: missing label of training case {case_id}; every "
                                                   f"imagesTr case needs labelsTr/{case_id}{ending}"),
                       label, case_id)
                continue
            records.append(CaseRecord(case_id, files, label, "training", loader, dict(meta), read_label))
        if (root / "labelsTr").is_dir():
            labels = [p for p in sorted((root / "labelsTr").iterdir()) if listed_file(p) and p.name.endswith(ending)]
            for path in labels:
                case_id = path.name[: -len(ending)]
                if case_id not in training_ids:
                    report(problems, FileNotFoundError(f"{path}: label without images in imagesTr (expected "
                                                       f"imagesTr/{case_id}_0000{ending})"), path, case_id)
        expected = data.get("numTraining")
        if isinstance(expected, int) and expected != len(training_ids):
            report(problems, ValueError(f"{root / 'dataset.json'}: numTraining is {expected} but imagesTr holds "
                                        f"{len(training_ids)} cases; fix numTraining or the images"),
                   root / "dataset.json")
        if (root / "imagesTs").is_dir():
            testing, _ = _grouped_channels(root / "imagesTs", ending, len(spec.channel_names), problems)
            for case_id, files in testing.items():
                records.append(CaseRecord(case_id, files, None, "testing", loader, dict(meta)))
        check_unique_ids(records, problems)
        return sorted(records, key=lambda r: r.case_id)


def _grouped_channels(folder: Path, ending: str, num_channels: int, problems: list[DiscoveryProblem] | None
                      ) -> tuple[dict[str, tuple[Path, ...]], set[str]]:
    """Channel files of ``CASE_XXXX<ending>`` names, grouped per case.

    Returns:
        ``{case: (channel 0 file, channel 1 file, ...)}`` of the complete cases, and the ids of
        all cases named in the folder (complete or not; nnU-Net's case count).

    Raises:
        ValueError / FileNotFoundError: a name without channel suffix, a channel index beyond
            ``num_channels`` or a missing channel file; with a ``problems`` list they are recorded
            there and the case (or file) left out.
    """
    cases: dict[str, dict[int, Path]] = {}
    bad: set[str] = set()
    for path in sorted(folder.iterdir()):
        if not (listed_file(path) and path.name.endswith(ending)):
            continue
        match = _CHANNEL.match(path.name[: -len(ending)])
        if match is None:
            report(problems, ValueError(f"{path}: nnU-Net image names end in a 4-digit channel suffix "
                                        f"(CASE_0000{ending})"), path)
            continue
        case_id, channel = match["case"], int(match["channel"])
        cases.setdefault(case_id, {})
        if channel >= num_channels:
            report(problems, ValueError(f"{path}: channel {channel:04d} but dataset.json declares "
                                        f"{num_channels} channel(s)"), path, case_id)
            bad.add(case_id)
            continue
        cases[case_id][channel] = path
    grouped = {}
    for case_id, channels in sorted(cases.items()):
        missing = [f"{case_id}_{c:04d}{ending}" for c in range(num_channels) if c not in channels]
        if missing:
            report(problems, FileNotFoundError(f"{folder}: case {case_id} lacks channel file(s) "
                                               f"{', '.join(missing)}"), folder / missing[0], case_id)
        elif case_id not in bad:
            grouped[case_id] = tuple(channels[c] for c in range(num_channels))
    return grouped, set(cases)
