"""Map preprocessed intensities to the model's ``[0, 1]`` input: one rule, shared by training and inference.

Preprocessing (:mod:`medsam_kit.data.preprocess`) leaves CT (window) and EM (percentile scale) in
``[0, 1]`` already, and MRI z-scored (mean 0, std 1 per case and channel). SAM-family models take
intensities in ``[0, 1]`` (their RGB/255 convention; the model normalises with its own
``pixel_mean`` / ``pixel_std``). The mapping is stored as plain data in every checkpoint
(``extra["intensity_to_unit"]``), so inference applies exactly what training did:

* ``{"kind": "identity"}`` -- CT / EM: values pass through, clipped to ``[0, 1]``.
* ``{"kind": "zscore_clip", "low": -3.0, "high": 3.0, "keep_zero": bool}`` -- MRI: clip z to
  ``[low, high]`` (±3 std keeps 99.7 % of a normal distribution; the rest are outliers the
  percentile clip already tamed) and scale linearly to ``[0, 1]`` (z = 0 -> 0.5). With
  ``keep_zero`` (skull-stripped data z-scored inside the nonzero mask, e.g. BraTS) voxels that are
  exactly 0 -- the stripped background -- map to 0, so background stays black as in the raw image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medsam_kit.data.preprocess import PreprocessingPlan

ZSCORE_CLIP = (-3.0, 3.0)


def intensity_spec(plan: PreprocessingPlan) -> dict[str, Any]:
    """The ``intensity_to_unit`` mapping for data prepared with ``plan`` (see module docstring).

    Raises:
        ValueError: channels normalised with different schemes (no single mapping fits them).
    """
    schemes = {n.scheme for n in plan.normalization}
    if len(schemes) != 1:
        raise ValueError(
            f"plan of {plan.dataset} mixes normalisation schemes {sorted(schemes)} across channels; "
            "one intensity mapping per dataset is supported"
        )
    if schemes == {"zscore"}:
        keep_zero = any(n.use_nonzero_mask for n in plan.normalization)
        return {"kind": "zscore_clip", "low": ZSCORE_CLIP[0], "high": ZSCORE_CLIP[1], "keep_zero": keep_zero}
    return {"kind": "identity"}


def to_unit(values: np.ndarray | torch.Tensor, spec: dict[str, Any]) -> np.ndarray | torch.Tensor:
    """Preprocessed intensities (any shape) -> model input in ``[0, 1]``, same type (float32 for numpy).

    Args:
        values: numpy array or torch tensor of preprocessed intensities.
        spec: from :func:`intensity_spec` (or a checkpoint's ``extra["intensity_to_unit"]``).
    """
    kind = spec.get("kind")
    is_torch = isinstance(values, torch.Tensor)
    x = values.float() if is_torch else np.asarray(values, dtype=np.float32)
    if kind == "identity":
        return x.clamp(0.0, 1.0) if is_torch else np.clip(x, 0.0, 1.0)
    if kind == "zscore_clip":
        low, high = float(spec["low"]), float(spec["high"])
        scaled = ((x.clamp(low, high) if is_torch else np.clip(x, low, high)) - low) / (high - low)
        if spec.get("keep_zero"):
            scaled = torch.where(x == 0, torch.zeros_like(scaled), scaled) if is_torch else np.where(x == 0, 0, scaled)
        return scaled if is_torch else scaled.astype(np.float32)
    raise ValueError(f"unknown intensity mapping {spec!r}; expected kind 'identity' or 'zscore_clip'")


def unit_pad_value(spec: dict[str, Any]) -> float:
    """Model-input value of a preprocessed 0 (what zero padding of preprocessed slices becomes)."""
    return float(to_unit(np.zeros(1, np.float32), spec)[0])
