"""The one error type of the server: an HTTP status and a one-line reason for the client."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: answered ``status`` with ``{"detail": reason}``.

    Args:
        status: 4xx HTTP status (400 unreadable, 401 auth, 404 unknown / evicted, 413 too large,
            415 file type, 422 valid HTTP but unusable content).
        detail: one line saying what was wrong and what to do; never a server path or a traceback.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = " ".join(str(detail).split())  # one line, whatever the source message held
