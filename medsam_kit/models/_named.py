"""One "register under a name" decorator for the model and adapter registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def registrar(table: dict[str, T], what: str) -> Callable[[str], Callable[[T], T]]:
    """``register = registrar(TABLE, "model name")``; then ``@register(name)`` stores the object in
    ``TABLE[name]``. Registering a different object under a taken name is a ``ValueError``."""

    def register(name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in table and table[name] is not obj:
                raise ValueError(f"{what} {name!r} is already registered")
            table[name] = obj
            return obj

        return decorate

    return register
