"""The seam between inference and training: how a run folder / checkpoint becomes a ready Segmenter.

Two things come from the training side (``medsam_kit.engine``, written in parallel):

* ``medsam_kit.engine.run.load_run(run_dir, device) -> (model, extra)`` loads ``best.pt`` (else ``last.pt``);
* ``medsam_kit.engine.intensity.to_unit(values, spec)`` maps preprocessed intensities (e.g.
  z-scored MRI) to the model's ``[0, 1]`` input, ``spec`` = ``extra["intensity_to_unit"]``.

Only :func:`load_run_for_inference` and :func:`intensity_fn_from_extra` touch them; if their final
names or signatures differ, these two functions are the only place to adapt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from medsam_kit.data.preprocess import PreprocessingPlan

IntensityFn = Callable[[np.ndarray], np.ndarray]


def intensity_fn_from_extra(extra: dict[str, Any]) -> IntensityFn | None:
    """``image -> image in [0, 1]`` from a checkpoint's ``extra["intensity_to_unit"]`` (None when absent)."""
    spec = extra.get("intensity_to_unit")
    if spec is None:
        return None
    try:
        from medsam_kit.engine.intensity import to_unit
    except ImportError as exc:  # the training side is not installed
        raise ValueError(f"the checkpoint maps intensities with {spec!r}, which needs "
                         f"medsam_kit.engine.intensity.to_unit ({exc})") from exc
    return lambda image: to_unit(image, spec)


def settings_from_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """``plan``, ``label_names`` and ``intensity_to_unit`` keyword arguments of :class:`Segmenter` from ``extra``."""
    plan = PreprocessingPlan.from_dict(extra["plan"]) if extra.get("plan") else None
    names = extra.get("label_names")
    return {
        "plan": plan,
        "label_names": {int(k): str(v) for k, v in names.items()} if names else None,
        "intensity_to_unit": intensity_fn_from_extra(extra),
    }


def load_run_for_inference(run_dir: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """THE SEAM: a run folder → ``Segmenter`` keyword arguments ``model``, ``plan``, ``label_names``,
    ``intensity_to_unit``, ``device``."""
    try:
        from medsam_kit.engine.run import load_run
    except ImportError as exc:
        raise ValueError(f"{run_dir}: loading run folders needs medsam_kit.engine.run.load_run ({exc}); "
                         f"use --model NAME --checkpoint FILE instead") from exc
    model, extra = load_run(run_dir, device=device)
    return {"model": model, "device": device, **settings_from_extra(extra)}
