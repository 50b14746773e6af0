"""The one error type of the server (an HTTP status and a one-line reason), and :func:`quoted` client text."""

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


def quoted(text: object, limit: int = 120) -> str:
    """``repr`` of client-controlled text for log records and messages: one line, at most ~``limit`` characters.

    ``repr`` escapes newlines, carriage returns, terminal escapes (``\\x1b``) and every other non-printable
    character, so a file name, path or header cannot forge or hide log lines.
    """
    text = str(text)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
