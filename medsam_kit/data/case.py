"""The one :class:`Case` type every dataset adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medsam_kit.io.geometry import Geometry


@dataclass
class Case:
    """One subject / volume of a dataset, in the package's conventions.

    Attributes:
        case_id: unique id within the dataset (also the file stem of its predictions).
        image: ``(C, Z, Y, X)`` array (channels first; C=1 for CT/EM, 4 for BraTS).
        geometry: LPS geometry of the ``(Z, Y, X)`` grid (see :mod:`medsam_kit.io.geometry`).
        channel_names: one name per channel, in a fixed order (e.g. ``("t1n", "t1c", "t2w", "t2f")``).
        label: ``(Z, Y, X)`` integer label map on the same grid, or ``None`` when unlabeled.
        label_names: ``{value: name}`` including ``0: "background"``.
        meta: dataset-specific facts (ACDC phase/group, BHSD pool, source paths, ...).
    """

    case_id: str
    image: np.ndarray
    geometry: Geometry
    channel_names: tuple[str, ...]
    label: np.ndarray | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim == 3:
            self.image = self.image[None]
        if self.image.ndim != 4:
            raise ValueError(f"case {self.case_id}: image must be (C, Z, Y, X), got shape {self.image.shape}")
        if len(self.channel_names) != self.image.shape[0]:
            raise ValueError(f"case {self.case_id}: {self.image.shape[0]} channels but channel_names "
                             f"{list(self.channel_names)}")
        if self.label is not None and self.label.shape != self.image.shape[1:]:
            raise ValueError(f"case {self.case_id}: label shape {self.label.shape} != image grid "
                             f"{self.image.shape[1:]}")

    @property
    def labeled(self) -> bool:
        return self.label is not None

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]


def case_file_stem(case_id: str) -> str:
    """File name stem for outputs of ``case_id`` (predictions): ids may hold ``/`` (EM domains
    such as ``lucchi/testing``), file names may not, so ``/`` becomes ``__``."""
    return case_id.replace("/", "__")
