"""What each dataset family is: channels, label values and names, evaluation regions.

A :class:`DatasetSpec` is the only dataset knowledge that code downstream of the adapters
(metrics, checks, preprocessing) needs. nnU-Net datasets build theirs from ``dataset.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset family.

    Attributes:
        name: registry name ('acdc', 'bhsd', 'brats', 'brats2021', 'em', 'nnunet').
        modality: 'MRI', 'CT' or 'EM' — picks the intensity normalisation.
        channel_names: fixed channel order of :attr:`Case.image`.
        label_names: ``{value: name}`` including 0 = background.
        regions: evaluation regions ``{name: label values}`` (BraTS WT/TC/ET); empty when each
            foreground label is evaluated on its own only.
        ignore_label: value excluded from training and metrics, if any.
        ct_window: default CT intensity window ``(lo, hi)`` in HU for preprocessing; None derives
            it from foreground percentiles (nnU-Net's rule).
    """

    name: str
    modality: str
    channel_names: tuple[str, ...]
    label_names: dict[int, str]
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ignore_label: int | None = None
    ct_window: tuple[float, float] | None = None

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.label_names))

    @property
    def foreground_labels(self) -> dict[int, str]:
        return {v: n for v, n in self.label_names.items() if v != 0 and v != self.ignore_label}

    def evaluation_classes(self) -> dict[str, tuple[int, ...]]:
        """Named classes to score: each foreground label, then each region (label sets)."""
        classes = {name: (value,) for value, name in sorted(self.foreground_labels.items())}
        classes.update(self.regions)
        return classes


ACDC = DatasetSpec("acdc", "MRI", ("cine",), {0: "background", 1: "RV", 2: "MYO", 3: "LV"})
# BHSD: the foreground is haemorrhage only (50-90 HU), so nnU-Net's foreground-percentile window
# would black out the brain around it; a subdural window (level 50, width 130) keeps brain, CSF
# and all five haemorrhage types apart and visible.
BHSD = DatasetSpec("bhsd", "CT", ("ct",), {0: "background", 1: "EDH", 2: "IPH", 3: "IVH", 4: "SAH", 5: "SDH"},
                   ct_window=(-15.0, 115.0))
# BraTS 2023+ (GLI, MEN, PED, SSA): labels 1 NCR, 2 ED (SNFH), 3 ET.
BRATS = DatasetSpec("brats", "MRI", ("t1n", "t1c", "t2w", "t2f"), {0: "background", 1: "NCR", 2: "ED", 3: "ET"},
                    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)})
# BraTS 2021 names the same modalities t1, t1ce, t2, flair and uses label 4 for ET (3 unused).
BRATS2021 = DatasetSpec("brats2021", "MRI", ("t1", "t1ce", "t2", "flair"),
                        {0: "background", 1: "NCR", 2: "ED", 4: "ET"},
                        regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)})
EM = DatasetSpec("em", "EM", ("em",), {0: "background", 1: "mitochondria"})

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (ACDC, BHSD, BRATS, BRATS2021, EM)}
