"""medsam_kit: medical-image segmentation with SAM-family models.

Conventions everywhere: arrays are ``(Z, Y, X)`` (channels first: ``(C, Z, Y, X)``); geometry is
ITK/LPS with spacing and origin in ``(x, y, z)`` order (see :mod:`medsam_kit.io.geometry`).

Public API (heavy modules are imported on first use, so ``import medsam_kit`` stays fast):

* volumes: :func:`read_volume`, :func:`write_volume`, :class:`Volume`, :class:`Geometry`
* datasets: :class:`Case`, :class:`DatasetSpec`, :func:`get_adapter`, :func:`list_datasets`,
  :func:`discover_cases`, :func:`load_cases`, :func:`make_split`, :class:`Split`
* synthetic data: :func:`generate_phantoms`, :func:`simulate_predictions`
* checks and preparation: :func:`check_dataset`, :func:`prepare`, :func:`load_prepared`
* evaluation: :func:`evaluate_folders`, :func:`class_metrics`
* models and inference: :func:`load_model`, :func:`list_models`, :class:`Segmenter`
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Geometry": "medsam_kit.io",
    "Volume": "medsam_kit.io",
    "read_volume": "medsam_kit.io",
    "write_volume": "medsam_kit.io",
    "Case": "medsam_kit.data.case",
    "DatasetSpec": "medsam_kit.data.datasets",
    "get_adapter": "medsam_kit.data.adapters",
    "list_datasets": "medsam_kit.data.adapters",
    "discover_cases": "medsam_kit.data.adapters",
    "load_cases": "medsam_kit.data.adapters",
    "make_split": "medsam_kit.data.splits",
    "Split": "medsam_kit.data.splits",
    "generate_phantoms": "medsam_kit.data.phantoms",
    "simulate_predictions": "medsam_kit.data.phantoms.predictions",
    "check_dataset": "medsam_kit.data.integrity",
    "prepare": "medsam_kit.data.cache",
    "load_prepared": "medsam_kit.data.cache",
    "evaluate_folders": "medsam_kit.engine.evaluation",
    "class_metrics": "medsam_kit.engine.metrics",
    "load_model": "medsam_kit.models",
    "list_models": "medsam_kit.models",
    "Segmenter": "medsam_kit.infer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'medsam_kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
