"""Training methods: strategy objects that compute the loss of a batch for the one Trainer.

Every method subclasses :class:`~medsam_kit.methods.base.TrainingMethod` (the hooks the Trainer calls;
it hands :meth:`~medsam_kit.methods.base.TrainingMethod.setup` a
:class:`~medsam_kit.methods.base.TrainContext`, never itself). A method is built from the config's
``method`` section, ``{"name": ..., <its keys>}``, as ``cls(params)``. Register new methods with
:func:`register_method` (entries of :data:`METHODS`: ``name: (params dataclass, method class)``).
How to add one, with the supervised method as the worked example: ``docs/methods.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medsam_kit.methods.base import TrainContext, TrainingMethod, ValidationObserver
from medsam_kit.methods.sss import SSSMethod, SSSParams
from medsam_kit.methods.supervised import SupervisedMethod, SupervisedParams

METHODS: dict[str, tuple[type, type[TrainingMethod]]] = {
    "supervised": (SupervisedParams, SupervisedMethod),
    "sss": (SSSParams, SSSMethod),
}


def _check_entry(name: str, params_cls: Any, method_cls: Any) -> None:
    """Raise ValueError unless ``params_cls`` is a dataclass and ``method_cls`` a TrainingMethod subclass."""
    if not (isinstance(method_cls, type) and issubclass(method_cls, TrainingMethod)):
        raise ValueError(
            f"method {name!r}: {method_cls!r} is not a subclass of medsam_kit.methods.TrainingMethod; "
            "subclass it (docs/methods.md)"
        )
    if not (isinstance(params_cls, type) and dataclasses.is_dataclass(params_cls)):
        raise ValueError(f"method {name!r}: its parameters {params_cls!r} must be a dataclass (the config keys)")


def register_method(name: str, params_cls: type, method_cls: type[TrainingMethod], *, replace: bool = False) -> None:
    """Add a method to :data:`METHODS`, so that configs can name it (``method: {name: NAME, ...}``).

    Args:
        name: the config's ``method.name``.
        params_cls: dataclass of the method's config keys (defaults for all).
        method_cls: a :class:`TrainingMethod` subclass, built as ``method_cls(params)``.
        replace: allow replacing a registered method of the same name.

    Raises:
        ValueError: ``method_cls`` is not a TrainingMethod subclass, ``params_cls`` not a dataclass, or
            ``name`` is taken (without ``replace``).
    """
    _check_entry(name, params_cls, method_cls)
    if name in METHODS and not replace:
        raise ValueError(f"method {name!r} is registered already ({METHODS[name][1].__name__}); pass replace=True")
    METHODS[name] = (params_cls, method_cls)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def method_params(section: dict[str, Any]):
    """The method's parameter dataclass filled from a config ``method`` section (``name`` + keys).

    Raises:
        ValueError: unknown method name, a registry entry that is not a TrainingMethod, or keys the method
            does not know (listing the known ones).
    """
    name = section.get("name")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    params_cls = METHODS[name][0]
    _check_entry(name, *METHODS[name])  # entries written into METHODS directly are checked here
    known = [f.name for f in dataclasses.fields(params_cls)]
    keys = {k: v for k, v in section.items() if k != "name"}
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join('method.' + k for k in unknown)} for method {name!r}; "
            f"known keys: {', '.join(known)}"
        )
    return params_cls(**keys)


def get_method(name_or_section: str | dict[str, Any], **params: Any) -> TrainingMethod:
    """Build a method: ``get_method("supervised", box_jitter_px=2)`` or ``get_method(config.method)``."""
    section = {"name": name_or_section, **params} if isinstance(name_or_section, str) else dict(name_or_section)
    params = method_params(section)  # checks the name and the entry first
    return METHODS[section["name"]][1](params)


__all__ = [
    "METHODS",
    "SSSMethod",
    "SSSParams",
    "SupervisedMethod",
    "SupervisedParams",
    "TrainContext",
    "TrainingMethod",
    "ValidationObserver",
    "get_method",
    "list_methods",
    "method_params",
    "register_method",
]
