"""Encoder adapters attached by configuration (LoRA, depth module, expert branch come later).

A model config carries ``"adapters": [{"type": NAME, **params}, ...]``. After the base network is
built (and an official checkpoint, if any, is loaded into it) each entry is passed to the function
registered under ``NAME``, which changes the model in place -- so no model code is forked:

* LoRA: wrap the ``qkv`` / MLP ``nn.Linear`` layers of :attr:`SegmenterModel.encoder_blocks`.
* depth module (k adjacent slices mixed inside each encoder block): wrap each block.
* expert branch: append a module to :attr:`SegmenterModel.feature_fusers`; ``encode`` calls each as
  ``features = fuser(images, features)`` after the SAM encoder.

New parameters live under the model, so :func:`~medsam_kit.models.checkpoints.save_checkpoint`
stores them and the same config rebuilds them before the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medsam_kit.models._named import registrar

AdapterFn = Callable[..., None]
_ADAPTERS: dict[str, AdapterFn] = {}


#: ``@register_adapter(name)``: registers ``fn(model, **params) -> None`` as adapter type ``name``.
register_adapter = registrar(_ADAPTERS, "adapter type")


def list_adapters() -> list[str]:
    """Registered adapter type names, sorted."""
    return sorted(_ADAPTERS)


def attach_adapters(model: nn.Module, specs: list[dict[str, Any]]) -> None:
    """Apply each ``{"type": NAME, **params}`` of ``specs`` to ``model`` in order."""
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"adapter entry {i} must be a dict with a 'type' key, got {spec!r}")
        name = spec["type"]
        if name not in _ADAPTERS:
            raise ValueError(f"unknown adapter type {name!r} (entry {i}); registered: {list_adapters() or 'none yet'}")
        _ADAPTERS[name](model, **{k: v for k, v in spec.items() if k != "type"})
