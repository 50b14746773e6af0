"""A tqdm bar exposed as the ``progress(done, total)`` callback the library functions take."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm import tqdm


class ProgressBar:
    """Callable ``progress(done, total)`` that drives a tqdm bar and remembers the last count."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "case") -> Iterator[Callable[[int, int], None]]:
    """``with progress_bar("check acdc") as progress: library_call(..., progress=progress)``.

    The bar is hidden when stderr is not a terminal (CI logs stay clean).
    """
    with tqdm(desc=description, unit=unit, disable=None) as bar:
        yield ProgressBar(bar)
