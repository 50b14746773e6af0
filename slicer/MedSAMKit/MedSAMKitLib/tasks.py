"""Run a slow call (an HTTP request) off Slicer's GUI thread and poll it from a Qt timer.

Nothing here touches Qt or MRML: the worker thread only runs the given function (the client's
requests and numpy decoding); the GUI thread polls :meth:`BackgroundCall.wait` and applies the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BackgroundCall:
    """``fn(*args, progress=report, **kwargs)`` in a daemon thread, with progress the GUI can read.

    ``report(fraction, message)`` (fraction in [0, 1] or None for "busy") is passed to ``fn`` as
    ``progress``; :attr:`progress` holds the latest report. Typical use from a ``qt.QTimer``::

        call = BackgroundCall(logic.requestSegmentation, plan, document).start()
        ...                                  # every 50 ms:
        if call.wait(0.02):                  # releases the GIL so the worker can run
            result = call.result()           # re-raises the worker's exception
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._lock = threading.Lock()
        self._progress: tuple[float | None, str] = (None, "")
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="MedSAMKit request", daemon=True)

    def start(self) -> BackgroundCall:
        self._thread.start()
        return self

    def _report(self, fraction: float | None, message: str) -> None:
        with self._lock:
            self._progress = (fraction, message)

    def _run(self) -> None:
        try:
            self._result = self._fn(*self._args, progress=self._report, **self._kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the GUI thread, which shows it
            self._error = err

    @property
    def progress(self) -> tuple[float | None, str]:
        """Latest ``(fraction or None, message)`` reported by the worker."""
        with self._lock:
            return self._progress

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds; True when finished. Slicer's GUI thread holds Python's GIL
        between events, so a worker thread only advances while the GUI thread waits here."""
        self._thread.join(timeout)
        return self.done

    def result(self) -> Any:
        """The function's return value; re-raises its exception. Only after :meth:`wait` returned True."""
        if not self.done:
            raise RuntimeError("the background call is still running")
        if self._error is not None:
            raise self._error
        return self._result
