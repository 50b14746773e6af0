"""Training methods: strategy objects that compute the loss of a batch for the one Trainer.

A method is built from the config's ``method`` section, ``{"name": ..., <its keys>}``, and exposes
``loss(model, batch, step) -> (loss tensor, logs {name: float})``. Register new methods in
:data:`METHODS` as ``name: (params dataclass, method class)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medsam_kit.methods.sss import SSSMethod, SSSParams
from medsam_kit.methods.supervised import SupervisedMethod, SupervisedParams

METHODS: dict[str, tuple[type, type]] = {
    "supervised": (SupervisedParams, SupervisedMethod),
    "sss": (SSSParams, SSSMethod),
}


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def method_params(section: dict[str, Any]):
    """The method's parameter dataclass filled from a config ``method`` section (``name`` + keys).

    Raises:
        ValueError: unknown method name, or keys the method does not know (listing the known ones).
    """
    name = section.get("name")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    params_cls = METHODS[name][0]
    known = [f.name for f in dataclasses.fields(params_cls)]
    keys = {k: v for k, v in section.items() if k != "name"}
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join('method.' + k for k in unknown)} for method {name!r}; "
            f"known keys: {', '.join(known)}"
        )
    return params_cls(**keys)


def get_method(name_or_section: str | dict[str, Any], **params: Any):
    """Build a method: ``get_method("supervised", box_jitter_px=2)`` or ``get_method(config.method)``."""
    section = {"name": name_or_section, **params} if isinstance(name_or_section, str) else dict(name_or_section)
    params = method_params(section)  # checks the name first
    return METHODS[section["name"]][1](params)


__all__ = [
    "METHODS",
    "SSSMethod",
    "SSSParams",
    "SupervisedMethod",
    "SupervisedParams",
    "get_method",
    "list_methods",
    "method_params",
]
