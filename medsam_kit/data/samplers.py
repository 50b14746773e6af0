"""Training samples from preprocessed cases: 2D slices, 2.5D k-slice stacks, 3D patches.

All three samplers are map-style ``torch.utils.data.Dataset`` objects over any sequence of
:class:`~medsam_kit.data.case.Case` (a list, or a lazy :class:`~medsam_kit.data.cache.PreparedDataset`).
Sample ``i`` is drawn with its own generator seeded by ``(seed, epoch, i)``, so the samples are
the same for a seed whatever the ``DataLoader`` worker count or order; call :meth:`set_epoch`
to draw new ones each epoch.

Shapes of one sample (``C`` channels; ``Y, X`` = ``patch_size`` or the case's in-plane size):

=======================  ===================  ================  =========================================
sampler                  ``image`` float32    ``label`` int64   position keys
=======================  ===================  ================  =========================================
:class:`SliceSampler`    ``(C, Y, X)``        ``(Y, X)``        ``slice_index``, ``patch_origin``
:class:`StackSampler`    ``(C, k, Y, X)``     ``(k, Y, X)``     ``slice_index`` (anchor), ``slice_indices``,
                                                                ``patch_origin``
:class:`PatchSampler`    ``(C, D, H, W)``     ``(D, H, W)``     ``patch_origin``
=======================  ===================  ================  =========================================

Every sample also has ``case_id`` (str). ``patch_origin`` is the int64 ``(z, y, x)`` volume index
of the sample's first voxel (negative where the sample is padded), so predictions can be pasted
back. ``label`` is absent when ``labeled=False`` (unlabeled pools for semi-supervision).

Sampling: a case is drawn uniformly; with probability ``foreground_probability`` (labeled only)
a foreground class present in the case is drawn, then one of its voxels, and the window is placed
to contain it (nnU-Net's oversampling; nnU-Net forces the last third of every batch, here each
sample is forced with probability p, 1/3 by default for 3D patches). Otherwise the slice/window is
uniform. ``crop='random'`` places the window at random (containing the chosen voxel when forced);
``crop='center'`` centres it on the chosen voxel, or on the image centre. Windows larger than the
image are padded (``pad_mode``: 'constant' zeros, 'edge', 'reflect'); 2.5D stacks repeat the first
/ last slice at the volume ends (edge padding along Z).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medsam_kit.data.case import Case

#: Foreground voxels kept per class and case for oversampling (nnU-Net keeps 10,000; fewer keeps
#: the per-worker cache small for thousands of cases while still covering the object).
LOCATIONS_PER_CLASS = 2_000


class _WindowSampler(Dataset):
    """Shared machinery: choose a case and a window ``(depth, Y, X)``, extract it with padding."""

    depth_mode = (
        "patch"  # 'slice': one slice; 'stack': k slices around an anchor (edge pad); 'patch': 3D crop
    )

    def __init__(
        self,
        cases: Sequence[Case],
        depth: int,
        patch_size_yx: tuple[int, int] | None,
        *,
        labeled: bool = True,
        foreground_probability: float = 0.5,
        crop: str = "random",
        pad_mode: str = "constant",
        num_samples: int | None = None,
        seed: int = 0,
        sequential: bool = False,
    ) -> None:
        crop = "center" if sequential else crop
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if pad_mode not in ("constant", "edge", "reflect"):
            raise ValueError(f"pad_mode must be 'constant', 'edge' or 'reflect', got {pad_mode!r}")
        if not 0.0 <= foreground_probability <= 1.0:
            raise ValueError(f"foreground_probability must be in [0, 1], got {foreground_probability}")
        if len(cases) == 0:
            raise ValueError("no cases to sample from")
        if patch_size_yx is not None and (len(patch_size_yx) != 2 or min(patch_size_yx) < 1):
            raise ValueError(f"in-plane patch size must be two positive ints (Y, X), got {patch_size_yx}")
        self.cases = cases
        self.depth = int(depth)
        self.patch_size_yx = None if patch_size_yx is None else tuple(int(p) for p in patch_size_yx)
        self.labeled = labeled
        self.foreground_probability = foreground_probability if labeled else 0.0
        self.crop = crop
        self.pad_mode = pad_mode
        self.seed = seed
        self.epoch = 0
        self._locations: dict[int, dict[int, np.ndarray]] = {}
        self._order: list[tuple[int, int]] | None = None
        if sequential:
            if self.depth_mode == "patch":
                raise ValueError(
                    "sequential order is for slices and stacks; use sliding-window inference for 3D"
                )
            self._order = [(c, z) for c in range(len(cases)) for z in range(cases[c].spatial_shape[0])]
        self.num_samples = len(self._order) if self._order is not None else int(num_samples or len(cases))

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still deterministic) set of samples for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    # ------------------------------------------------------------------ sampling
    def _foreground_locations(self, case_index: int, label: np.ndarray) -> dict[int, np.ndarray]:
        """``{label value: (n, 3) int (z, y, x)}`` for each foreground class, subsampled; cached."""
        if case_index not in self._locations:
            rng = np.random.default_rng((self.seed, case_index))
            found = {}
            for value in np.unique(label):
                if value == 0:
                    continue
                coords = np.argwhere(label == value)
                if len(coords) > LOCATIONS_PER_CLASS:
                    coords = coords[rng.choice(len(coords), LOCATIONS_PER_CLASS, replace=False)]
                found[int(value)] = coords.astype(np.int32)
            self._locations[case_index] = found
        return self._locations[case_index]

    def _axis_start(self, size: int, patch: int, point: int | None, rng: np.random.Generator) -> int:
        """First index of a ``patch``-long window on an axis of length ``size`` (may be < 0 or overhang)."""
        lo, hi = min(0, size - patch), max(0, size - patch)
        if self.crop == "center":
            return (size - patch) // 2 if point is None else int(np.clip(point - patch // 2, lo, hi))
        if point is not None:  # keep the chosen voxel inside the window
            lo, hi = max(lo, point - patch + 1), min(hi, point)
        return int(rng.integers(lo, hi + 1))

    def _window(self, shape: tuple[int, int, int], point, rng, anchor: int | None = None):
        """Starts and sizes ``(z, y, x)`` of the window.

        ``point`` is a forced voxel ``(z, y, x)`` or None; ``anchor`` fixes the slice (sequential order).
        """
        z_size, y_size, x_size = shape
        py, px = self.patch_size_yx or (y_size, x_size)
        if self.depth_mode == "patch":
            z0 = self._axis_start(z_size, self.depth, None if point is None else point[0], rng)
        else:
            if anchor is None:
                anchor = int(rng.integers(z_size)) if point is None else int(point[0])
            z0 = anchor - self.depth // 2 if self.depth_mode == "stack" else anchor
        y0 = self._axis_start(y_size, py, None if point is None else point[1], rng)
        x0 = self._axis_start(x_size, px, None if point is None else point[2], rng)
        return [z0, y0, x0], [self.depth, py, px]

    def _extract(self, array: np.ndarray, starts: list[int], sizes: list[int], label: bool) -> np.ndarray:
        """Window of ``array`` ``(..., Z, Y, X)``; parts outside the volume are padded."""
        lead = array.ndim - 3
        dims = array.shape[-3:]
        inside = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(starts, sizes, dims, strict=True))
        block = np.asarray(array[(slice(None),) * lead + inside])
        pads = [(max(0, -s), max(0, s + n - d)) for s, n, d in zip(starts, sizes, dims, strict=True)]
        z_mode = "edge" if self.depth_mode == "stack" else self.pad_mode
        for axis, mode in ((0, z_mode), (1, self.pad_mode), (2, self.pad_mode)):
            if any(pads[axis]):
                width = [(0, 0)] * array.ndim
                width[lead + axis] = pads[axis]
                # Labels pad with background unless the image repeats its own voxels (edge/reflect).
                block = np.pad(block, width, mode="constant" if (label and mode == "constant") else mode)
        return block

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self._order is not None:
            case_index, z = self._order[index]
            case = self.cases[case_index]
            starts, sizes = self._window(case.spatial_shape, None, rng, anchor=z)
        else:
            case_index = int(rng.integers(len(self.cases)))
            case = self.cases[case_index]
            point = None
            if self.labeled and rng.random() < self.foreground_probability:
                locations = self._foreground_locations(case_index, np.asarray(self._label(case)))
                if locations:  # a case without foreground falls back to a uniform sample (as nnU-Net)
                    coords = locations[list(locations)[rng.integers(len(locations))]]
                    point = coords[rng.integers(len(coords))]
            starts, sizes = self._window(case.spatial_shape, point, rng)
        return self._sample(case, starts, sizes)

    def _label(self, case: Case) -> np.ndarray:
        if case.label is None:
            raise ValueError(
                f"case {case.case_id} has no label but the sampler is labeled; "
                "sample it with labeled=False or select labeled cases only"
            )
        return case.label

    def _sample(self, case: Case, starts: list[int], sizes: list[int]) -> dict:
        image = self._extract(case.image, starts, sizes, label=False).astype(np.float32)
        sample = {"case_id": case.case_id, "patch_origin": torch.tensor(starts, dtype=torch.int64)}
        label = self._extract(self._label(case), starts, sizes, label=True) if self.labeled else None
        if self.depth_mode == "slice":
            image = image[:, 0]
            label = None if label is None else label[0]
        if self.depth_mode != "patch":
            z_size = case.spatial_shape[0]
            anchor = starts[0] + self.depth // 2 if self.depth_mode == "stack" else starts[0]
            sample["slice_index"] = anchor
            if self.depth_mode == "stack":
                indices = np.clip(np.arange(starts[0], starts[0] + self.depth), 0, z_size - 1)
                sample["slice_indices"] = torch.from_numpy(indices.astype(np.int64))
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image))
        if label is not None:
            sample["label"] = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
        return sample


class SliceSampler(_WindowSampler):
    """2D slices: ``image`` ``(C, Y, X)``, ``label`` ``(Y, X)``.

    Args:
        cases: preprocessed cases (image ``(C, Z, Y, X)``).
        patch_size: in-plane output size ``(Y, X)`` by crop/pad, or None for the whole slice.
        labeled: return labels (every case needs one) or images only.
        foreground_probability: chance that a sample is centred on a foreground voxel.
        crop: 'random' (training) or 'center'.
        pad_mode: 'constant' (zeros), 'edge' or 'reflect' when the slice is smaller than ``patch_size``.
        num_samples: samples per epoch (default: one per case); ignored when ``sequential``.
        seed: base seed.
        sequential: every slice of every case in order (validation / inference), centre crop.
    """

    depth_mode = "slice"

    def __init__(self, cases: Sequence[Case], patch_size: tuple[int, int] | None = None, **options) -> None:
        super().__init__(cases, 1, patch_size, **options)


class StackSampler(_WindowSampler):
    """2.5D stacks of ``k`` consecutive slices: ``image`` ``(C, k, Y, X)``, ``label`` ``(k, Y, X)``.

    The stack covers slices ``anchor - k // 2 .. anchor - k // 2 + k - 1`` (GBT-SAM: k = 4); at
    the volume ends the first/last slice is repeated (``slice_indices`` lists the slices used).
    Other arguments as :class:`SliceSampler`.
    """

    depth_mode = "stack"

    def __init__(self, cases: Sequence[Case], k: int = 4, patch_size: tuple[int, int] | None = None,
                 **options) -> None:
        if k < 1:
            raise ValueError(f"k (slices per stack) must be at least 1, got {k}")
        super().__init__(cases, k, patch_size, **options)


class PatchSampler(_WindowSampler):
    """3D patches: ``image`` ``(C, D, H, W)``, ``label`` ``(D, H, W)``; ``patch_size`` is ``(D, H, W)``.

    ``foreground_probability`` defaults to 1/3 (nnU-Net's oversampling rate). Other arguments as
    :class:`SliceSampler`.
    """

    depth_mode = "patch"

    def __init__(self, cases: Sequence[Case], patch_size: tuple[int, int, int], *,
                 foreground_probability: float = 1 / 3, **options) -> None:
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"3D patch size must be three positive ints (D, H, W), got {patch_size}")
        super().__init__(cases, patch_size[0], tuple(patch_size[1:]), foreground_probability=foreground_probability,
                         **options)
