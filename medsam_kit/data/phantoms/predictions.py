"""Simulated predictions: ground-truth label maps with controlled, realistic errors.

They let ``medsam-kit evaluate`` (and anything that consumes predictions) be tried end to end
before a model is trained: each class is eroded or dilated in-plane, shifted by a voxel or two,
sometimes loses a slice, and sometimes gains a spurious blob — the kinds of error a segmentation
model makes. The outputs keep the ground truth's grid and geometry exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from medsam_kit.data.case import case_file_stem
from medsam_kit.io import Volume, write_volume

_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected cross, no through-plane growth


def perturb_label_map(label: np.ndarray, rng: np.random.Generator, severity: float = 1.0) -> np.ndarray:
    """Return a corrupted copy of a ``(Z, Y, X)`` label map.

    Args:
        label: integer label map (0 = background).
        rng: random generator (the result is deterministic for its state).
        severity: scales how often each kind of error happens (0 = unchanged copy).
    """
    out = np.zeros_like(label)
    for value in (v for v in np.unique(label) if v != 0):
        mask = label == value
        if rng.random() < 0.5 * severity:
            op = ndimage.binary_erosion if rng.random() < 0.5 else ndimage.binary_dilation
            mask = op(mask, _IN_PLANE, iterations=int(rng.integers(1, 3)))
        if rng.random() < 0.5 * severity:
            mask = np.roll(mask, tuple(int(s) for s in rng.integers(-2, 3, size=2)), axis=(1, 2))
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        if slices.size > 2 and rng.random() < 0.3 * severity:
            mask[rng.choice(slices)] = False
        if rng.random() < 0.2 * severity:
            z, y, x = (int(rng.integers(0, n)) for n in label.shape)
            blob = np.zeros_like(mask)
            blob[z, max(0, y - 2):y + 3, max(0, x - 2):x + 3] = True
            mask |= blob
        out[mask & (out == 0)] = value
    return out


def simulate_predictions(dataset: str, gt_root: str | Path, out_dir: str | Path, *, seed: int = 0,
                         severity: float = 1.0, progress: Callable[[int, int], None] | None = None,
                         overwrite: bool = False) -> list[Path]:
    """Write one simulated prediction ``<case_id>.nii.gz`` per labeled case of a raw dataset folder.

    Args:
        dataset: adapter name ('acdc', 'bhsd', 'brats', 'em', 'nnunet').
        gt_root: raw dataset folder (e.g. written by :func:`generate_phantoms`).
        out_dir: destination folder for the predictions.
        seed: random seed; severity: see :func:`perturb_label_map`.
        overwrite: replace a non-empty ``out_dir`` (default: refuse, so stale predictions never mix in).

    Returns:
        The written paths.
    """
    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.phantoms import require_empty_or_overwrite

    out_dir = Path(out_dir)
    require_empty_or_overwrite(out_dir, overwrite, "predictions")
    records = [r for r in get_adapter(dataset).discover(Path(gt_root)) if r.label_file is not None]
    if not records:
        raise ValueError(f"{gt_root}: no labeled {dataset} cases found to simulate predictions from")
    if overwrite and out_dir.is_dir():
        shutil.rmtree(out_dir)
    written = []
    for index, record in enumerate(records):
        case = record.load()
        rng = np.random.default_rng([seed, index])
        prediction = perturb_label_map(case.label, rng, severity).astype(np.uint8)
        path = out_dir / f"{case_file_stem(record.case_id)}.nii.gz"
        written.append(write_volume(path, Volume(prediction, case.geometry)))
        if progress:
            progress(index + 1, len(records))
    return written
