"""Dataset fingerprint: what the data look like, measured once and saved as readable JSON.

nnU-Net style (``nnunetv2/experiment_planning/dataset_fingerprint``): per-case spacing and
shape, and per-channel intensity statistics of *foreground* voxels (label > 0) pooled over
the dataset. The preprocessing plan (:mod:`medsam_kit.data.preprocess`) is derived from it, and
every run folder keeps a copy so a run can be reproduced.

Conventions: ``spacing`` is ``(x, y, z)`` mm like :class:`~medsam_kit.io.geometry.Geometry`;
``shape_zyx`` is the array shape ``(Z, Y, X)``. Percentile keys are ``percentile_00_5`` (0.5 %)
and ``percentile_99_5`` (99.5 %).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medsam_kit.data.case import Case
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.io.atomic import atomic_write_text

FINGERPRINT_VERSION = 1
#: Foreground voxels sampled per case and channel for the intensity statistics. nnU-Net samples
#: 10^8 / num_cases with replacement; a fixed budget without replacement keeps small datasets exact.
SAMPLES_PER_CASE = 10_000
PERCENTILES = (0.5, 99.5)  # nnU-Net CTNormalization clips to these foreground percentiles


@dataclass(frozen=True)
class CaseFingerprint:
    """Per-case facts.

    Attributes:
        case_id: the case's id.
        shape_zyx: spatial array shape ``(Z, Y, X)``.
        spacing: voxel size ``(x, y, z)`` mm.
        direction: 3×3 direction matrix (columns = index axes x, y, z), row-major.
        labeled: whether the case has a label map.
        nonzero_fraction: fraction of voxels where any channel is nonzero (≈ 1 for CT/cine MRI,
            small for skull-stripped BraTS); decides masked MRI normalisation in the plan.
    """

    case_id: str
    shape_zyx: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]
    labeled: bool
    nonzero_fraction: float


@dataclass
class DatasetFingerprint:
    """What a dataset looks like (see module docstring).

    Attributes:
        dataset: spec name ('acdc', 'bhsd', ...).
        modality: 'CT', 'MRI' or 'EM' (from the spec).
        channel_names: channel order of the cases.
        label_names: ``{value: name}`` from the spec.
        cases: one :class:`CaseFingerprint` per case, in input order.
        intensity: per channel ``{"channel", "mean", "std", "min", "max", "median",
            "percentile_00_5", "percentile_99_5", "num_samples"}`` over the sampled voxels.
        intensity_source: 'foreground' (label > 0 of labeled cases) or 'nonzero' (no labeled
            case: voxels where any channel is nonzero).
        median_spacing: per-axis median of case spacings, ``(x, y, z)`` mm.
        samples_per_case: sampling budget used; ``seed``: sampling seed.
        source_signature: hash of the inputs, so an unchanged dataset is not measured twice.
    """

    dataset: str
    modality: str
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    cases: list[CaseFingerprint]
    intensity: list[dict]
    intensity_source: str
    median_spacing: tuple[float, float, float]
    samples_per_case: int = SAMPLES_PER_CASE
    seed: int = 0
    source_signature: str = ""
    version: int = FINGERPRINT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def median_inplane_spacing(self) -> tuple[float, float]:
        """``(x, y)`` median spacing in mm: the default in-plane target of the plan."""
        return self.median_spacing[0], self.median_spacing[1]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["label_names"] = {str(k): v for k, v in self.label_names.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DatasetFingerprint:
        data = dict(data)
        if data.get("version") != FINGERPRINT_VERSION:
            raise ValueError(
                f"fingerprint version {data.get('version')!r} is not {FINGERPRINT_VERSION}; "
                "re-run `medsam-kit prepare` to measure the dataset again"
            )
        data["cases"] = [
            CaseFingerprint(
                c["case_id"],
                tuple(c["shape_zyx"]),
                tuple(c["spacing"]),
                tuple(map(tuple, c["direction"])),
                bool(c["labeled"]),
                float(c["nonzero_fraction"]),
            )
            for c in data["cases"]
        ]
        data["label_names"] = {int(k): v for k, v in data["label_names"].items()}
        data["channel_names"] = tuple(data["channel_names"])
        data["median_spacing"] = tuple(data["median_spacing"])
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write indented JSON atomically; returns the path."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetFingerprint:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a medsam_kit fingerprint ({exc}); delete it and re-run prepare"
            ) from exc


def _foreground_mask(case: Case, ignore_label: int | None) -> np.ndarray:
    mask = case.label > 0
    if ignore_label is not None:
        mask &= case.label != ignore_label
    return mask


def _sample(values: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``values`` when there are few, else ``budget`` of them drawn without replacement."""
    if values.size <= budget:
        return values
    return values[rng.choice(values.size, budget, replace=False)]


def channel_statistics(values: np.ndarray) -> dict:
    """Mean, std, min, max, median and the 0.5/99.5 percentiles of a 1D sample (floats)."""
    if values.size == 0:
        return {
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "median": None,
            "percentile_00_5": None,
            "percentile_99_5": None,
            "num_samples": 0,
        }
    values = values.astype(np.float64)
    low, high = np.percentile(values, PERCENTILES)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "median": float(np.median(values)),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
        "num_samples": int(values.size),
    }


def compute_fingerprint(
    cases: Iterable[Case],
    spec: DatasetSpec,
    *,
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
    source_signature: str = "",
    progress: Callable[[int, int], None] | None = None,
    total: int | None = None,
) -> DatasetFingerprint:
    """Measure a dataset (one pass; each case is held in memory only while it is measured).

    Args:
        cases: the dataset's cases, e.g. ``(record.load() for record in records)``; image
            ``(C, Z, Y, X)``, label ``(Z, Y, X)`` or None.
        spec: gives the dataset name, modality, label names and ignore label.
        samples_per_case: voxels sampled per case and channel for intensity statistics.
        seed: sampling seed (the fingerprint is deterministic for a seed).
        source_signature: stored as is (see :mod:`medsam_kit.data.cache`).
        progress: optional ``progress(done, total)`` after each case; ``total`` is passed through.

    Returns:
        The :class:`DatasetFingerprint`. Intensities come from foreground voxels (label > 0, minus
        the ignore label) of labeled cases; when no case is labeled, from nonzero voxels.
    """
    rng = np.random.default_rng(seed)
    case_facts: list[CaseFingerprint] = []
    foreground: list[list[np.ndarray]] = []
    nonzero: list[list[np.ndarray]] = []
    channel_names: tuple[str, ...] | None = None
    for done, case in enumerate(cases, start=1):
        if channel_names is None:
            channel_names = tuple(case.channel_names)
        elif tuple(case.channel_names) != channel_names:
            raise ValueError(
                f"case {case.case_id}: channels {list(case.channel_names)} differ from the first "
                f"case's {list(channel_names)}; every case of a dataset needs the same channels"
            )
        any_nonzero = np.any(case.image != 0, axis=0)
        case_facts.append(
            CaseFingerprint(
                case.case_id,
                tuple(int(s) for s in case.spatial_shape),
                case.geometry.spacing,
                case.geometry.direction,
                case.labeled,
                float(any_nonzero.mean()),
            )
        )
        if case.labeled:
            mask = _foreground_mask(case, spec.ignore_label)
            foreground.append([_sample(channel[mask], samples_per_case, rng) for channel in case.image])
        elif not foreground:  # only needed while no labeled case has been seen
            nonzero.append([_sample(channel[any_nonzero], samples_per_case, rng) for channel in case.image])
        if progress is not None:
            progress(done, total if total is not None else done)
    if not case_facts:
        raise ValueError(f"no cases to fingerprint for dataset {spec.name!r}: the source folder held none")

    source, pools = ("foreground", foreground) if foreground else ("nonzero", nonzero)
    intensity = []
    for index, name in enumerate(channel_names):
        values = np.concatenate([per_case[index] for per_case in pools])
        intensity.append({"channel": name, **channel_statistics(values)})
    median_spacing = tuple(float(v) for v in np.median([c.spacing for c in case_facts], axis=0))
    return DatasetFingerprint(
        dataset=spec.name,
        modality=spec.modality,
        channel_names=channel_names,
        label_names=dict(spec.label_names),
        cases=case_facts,
        intensity=intensity,
        intensity_source=source,
        median_spacing=median_spacing,
        samples_per_case=samples_per_case,
        seed=seed,
        source_signature=source_signature,
    )
