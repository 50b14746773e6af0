"""Host and Origin checks: the server answers only its own names, and web pages only when allowed.

Why: on loopback without a token, any web page open in the user's browser could otherwise send
requests to ``http://127.0.0.1:8000`` (a form or a ``no-cors`` fetch uploads a file: CSRF), and a
page whose name is rebound to 127.0.0.1 (DNS rebinding) could even read the answers. Browsers always
send the page's name as ``Host`` and mark their cross-site requests with ``Origin`` and
``Sec-Fetch-Site``; API clients (the 3D Slicer extension, curl, scripts) send neither of the latter.

Rules of :class:`RequestGuard` (403 ``{"detail": "<one line>"}`` otherwise, before the body is read):

- ``Host`` must be a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one of
  ``allowed_hosts`` (the bound address, ``--allowed-host`` names; ``*`` accepts any name);
- a request with ``Origin`` must come from one of ``allowed_origins`` (``--allowed-origin``) or from
  the server's own origin (``Origin`` equal to ``Host``: the browsable ``/docs`` page);
- a request without ``Origin`` but with ``Sec-Fetch-Site`` other than ``same-origin`` / ``none``
  (an ``<img>`` or link on another site) is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from medsam_kit.serve.errors import quoted

log = logging.getLogger(__name__)

ANY_HOST = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OWN_SITE = ("same-origin", "none")  # none: typed in the address bar or opened from a bookmark
_PLAIN_NAME = re.compile(r"[a-z0-9.:-]{1,253}")  # shown as the --allowed-host value in a refusal


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for anything else."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to any interface


def host_name(value: str) -> str:
    """The name part of a ``Host`` header or a ``--host`` value, lower case, without port or brackets.

    ``"LocalHost:8000"`` -> ``"localhost"``, ``"[::1]:8000"`` and ``"::1"`` -> ``"::1"``,
    ``"example.org."`` -> ``"example.org"``.
    """
    text = value.strip().lower()
    if text.startswith("["):  # [IPv6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))  # one spelling per address: 0:0:0:0:0:0:0:1 -> ::1
    except ValueError:
        return text.rstrip(".")


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (lower case, no default port).

    Raises:
        ValueError: ``value`` is not an http(s) origin (a path, ``*``, no scheme ...).
    """
    try:
        parts = urllib.parse.urlsplit(value.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or parts.username
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"--allowed-origin {quoted(value)}: expected the origin of a web page, scheme://host[:port] "
                         f"(e.g. https://viewer.example.org or http://localhost:3000), without path or wildcard")
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")


class RequestGuard:
    """ASGI middleware applying the Host / Origin / Sec-Fetch-Site rules of this module to every request.

    Args:
        app: the wrapped ASGI application.
        allowed_hosts: names answered besides the loopback ones (``*``: any name).
        allowed_origins: web page origins allowed to send requests (``scheme://host[:port]``).
    """

    def __init__(self, app, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        names = {ANY_HOST if name.strip() == ANY_HOST else host_name(name) for name in allowed_hosts}
        self.any_host = ANY_HOST in names
        self.hosts = frozenset(names - {ANY_HOST})
        self.origins = frozenset(normalize_origin(origin) for origin in allowed_origins)

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return bool(name) and (self.any_host or is_loopback(name) or name in self.hosts)

    def refusal(self, headers: Headers) -> str | None:
        """Why a request with these headers is refused (one line), or None to serve it."""
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            name = host_name(host) if _PLAIN_NAME.fullmatch(host_name(host)) else "NAME"
            return (f"Host {quoted(host)} is not a name of this server (a DNS rebinding page?); connect to "
                    f"127.0.0.1, or start the server with --allowed-host {name} to answer to that name")
        origin = headers.get("origin")
        if origin is not None:
            if self._origin_allowed(origin, host):
                return None
            return (f"requests from web pages are refused: Origin {quoted(origin)} is not allowed; start the "
                    f"server with --allowed-origin URL to let that page use it")
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in _OWN_SITE:
            return (f"requests from other web sites are refused (Sec-Fetch-Site: {quoted(site)}); start the "
                    f"server with --allowed-origin URL to let a page use it")
        return None

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return False  # "null" (sandboxed frames, file:// pages) and anything malformed
        if normalized in self.origins:
            return True
        # The server's own pages (/docs): the Host check above already refused foreign names.
        own = urllib.parse.urlsplit(origin.strip()).netloc.lower()
        return host is not None and own == host.strip().lower()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan; the API has no websockets
            return await self.app(scope, receive, send)
        refusal = self.refusal(Headers(scope=scope))
        if refusal is None:
            return await self.app(scope, receive, send)
        log.warning("refused %s %s: %s", scope["method"], quoted(scope.get("path", "")), refusal)
        await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
