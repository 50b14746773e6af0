"""HTTP client of ``medsam-kit serve`` (API v1), standard library only (``urllib``), so it runs in any Slicer.

Endpoints (see ``docs/slicer.md`` and the server's ``/docs``)::

    GET    /v1/health                      {"status": "ok"}                         (no token needed)
    GET    /v1/info                        model, channels, labels (value, name, colour), limits
    POST   /v1/volumes?filename=NAME       raw volume file bytes -> {"id", "shape_zyx", "channels", "geometry"}
    GET    /v1/volumes[/ID]                uploaded volumes
    POST   /v1/volumes/ID/segment?output=  prompt document (JSON) -> label map file bytes
    POST   /v1/volumes/ID/auto?output=     -> label map file bytes (all labels)
    DELETE /v1/volumes/ID                  204

Every failure is a :class:`MedSAMKitError` whose message is one line saying what happened and what
to do; ``error.kind`` tells them apart: ``"unreachable"`` (server down, wrong URL, tunnel closed),
``"timeout"``, ``"dropped"`` (the connection broke mid-request: server stopped, or an upload over
its size limit cut off), ``"http"`` (the server answered 4xx/5xx; ``error.status`` and its one-line
``error.detail``), ``"protocol"`` (something answered that is not a medsam-kit server) and
``"usage"`` (refused before sending: no URL, an upload over the limit ``/v1/info`` announced, ...).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

API_VERSION = 1
DEFAULT_URL = "http://127.0.0.1:8000"
OUTPUTS = ("seg.nrrd", "nrrd", "nifti")
_CHUNK = 1 << 20  # bytes per upload/download step: progress granularity

#: ``progress(fraction, message)``: fraction in [0, 1], or None while the server computes.
Progress = Callable[[Optional[float], str], None]


class MedSAMKitError(Exception):
    """One-line error of a request (see the module docstring for ``kind``)."""

    def __init__(self, message: str, *, kind: str = "http", status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.kind, self.status, self.detail = kind, status, detail

    @property
    def server_down(self) -> bool:
        """True when no server answered at all (not running, wrong host/port, SSH tunnel closed)."""
        return self.kind == "unreachable"


@dataclass(frozen=True)
class LabelInfo:
    """A structure the model segments: label ``value`` (1..255), ``name``, ``color`` (r, g, b) 0..255."""

    value: int
    name: str
    color: tuple[int, int, int]

    @classmethod
    def from_json(cls, data: Mapping) -> LabelInfo:
        return cls(int(data["value"]), str(data["name"]), tuple(int(c) for c in data.get("color", (128, 128, 128))))


@dataclass(frozen=True)
class ServerInfo:
    """``GET /v1/info``: what the server's model takes and produces.

    ``channels`` names the model's input channels in upload order; ``accepted_channels`` lists the
    channel counts an upload may have: the plan's count for a trained run, or ``1`` and the model's
    ``in_channels`` for a model without a plan (a grey volume is repeated into its channels).
    """

    api_version: int
    version: str
    model_name: str
    image_size: int
    in_channels: int
    num_classes: int
    channels: tuple[str, ...]
    accepted_channels: tuple[int, ...]
    labels: tuple[LabelInfo, ...]
    max_upload_bytes: int
    formats: tuple[str, ...]
    coordinates: tuple[str, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping) -> ServerInfo:
        model = data.get("model", {})
        in_channels = int(model.get("in_channels", 1))
        channels = tuple(str(c) for c in data.get("channels", [f"channel_{n}" for n in range(in_channels)]))
        return cls(
            api_version=int(data["api_version"]), version=str(data.get("medsam_kit_version", "?")),
            model_name=str(model.get("name", "?")), image_size=int(model.get("image_size", 0)),
            in_channels=in_channels, num_classes=int(model.get("num_classes", 0)),
            channels=channels, accepted_channels=tuple(int(c) for c in data.get("accepted_channels", [len(channels)])),
            labels=tuple(LabelInfo.from_json(label) for label in data.get("labels", [])),
            max_upload_bytes=int(data.get("max_upload_bytes", 0)), formats=tuple(data.get("formats", OUTPUTS)),
            coordinates=tuple(data.get("coordinates", ("voxel", "world"))), raw=dict(data))

    def label(self, name: str) -> LabelInfo:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"the server's model has no label {name!r}; it has {', '.join(lb.name for lb in self.labels)}")

    def summary(self) -> str:
        """One line for the UI: model, channels, structures."""
        names = ", ".join(label.name for label in self.labels) or "none"
        accepted = " or ".join(str(c) for c in self.accepted_channels)
        return (f"{self.model_name} ({self.image_size} px), input {accepted} channel(s) [{', '.join(self.channels)}], "
                f"structures: {names}; medsam-kit {self.version}")


@dataclass(frozen=True)
class UploadedVolume:
    """``POST /v1/volumes``: the server's id of the volume, its ``(Z, Y, X)`` shape, channels and LPS geometry."""

    id: str
    shape_zyx: tuple[int, int, int]
    channels: int
    geometry: dict
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping) -> UploadedVolume:
        return cls(str(data["id"]), tuple(int(n) for n in data["shape_zyx"]), int(data.get("channels", 1)),
                   dict(data.get("geometry", {})), dict(data))


@dataclass(frozen=True)
class LabelMapResult:
    """A segmentation from ``/segment`` or ``/auto``: the label map file and what the headers say.

    Attributes:
        content: the file bytes (``.seg.nrrd``, ``.nrrd`` or ``.nii.gz``, on the uploaded grid).
        filename: from ``Content-Disposition`` (``labels.seg.nrrd`` ...).
        labels: ``X-MedSAM-Labels``: value, name, colour of every label.
        stats: ``X-MedSAM-Stats``: ``{"seconds": float, "encoded_slices": int}`` (encoder work of this request).
    """

    content: bytes
    filename: str
    labels: tuple[LabelInfo, ...]
    stats: dict

    def read(self):
        """Decode a NRRD / ``.seg.nrrd`` result -> :class:`~MedSAMKitLib.nrrd.NrrdImage` (labels ``(Z, Y, X)``)."""
        from .nrrd import read_nrrd

        if self.filename.endswith((".nii", ".nii.gz")):
            raise MedSAMKitError(f"{self.filename}: NIfTI results are not decoded here; request output='seg.nrrd'",
                                 kind="protocol")
        return read_nrrd(self.content)


def format_size(count: int) -> str:
    """``123456789`` -> ``'117.7 MiB'``; below a MiB in kB or bytes."""
    if count >= 2**20:
        return f"{count / 2**20:.1f} MiB"
    return f"{count / 1024:.1f} kB" if count >= 1024 else f"{count} bytes"


def normalize_url(url: str) -> str:
    """``"localhost:8000"`` -> ``"http://localhost:8000"``; trailing ``/`` removed; http(s) only."""
    url = (url or "").strip()
    if not url:
        raise MedSAMKitError("no server URL: enter where `medsam-kit serve` listens, e.g. " + DEFAULT_URL,
                             kind="usage")
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise MedSAMKitError(f"server URL {url!r} is not an http(s)://host:port address (e.g. {DEFAULT_URL})",
                             kind="usage")
    return url.rstrip("/")


def _detail(body: bytes) -> str:
    """The server's one-line reason from a JSON error body (FastAPI lists for validation errors)."""
    try:
        detail = json.loads(body.decode("utf-8")).get("detail")
    except (ValueError, AttributeError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        return text[0][:300] if text else ""
    if isinstance(detail, list):  # [{"loc": [...], "msg": "..."}]
        return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
                         if isinstance(item, Mapping) else str(item) for item in detail)
    return str(detail) if detail is not None else ""


class MedSAMKitClient:
    """Talk to one ``medsam-kit serve``.

    Args:
        url: where the server listens (``http://127.0.0.1:8000``; through an SSH tunnel, the local end).
        token: the server's ``--token`` (sent as ``Authorization: Bearer``); None when it has none.
        timeout: seconds to wait for quick requests (health, info, listings, delete).
        segment_timeout: seconds to wait for an upload or a segmentation (the first one on a volume encodes
            its slices): the panel's *Timeout*.
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
                 segment_timeout: float = 600.0) -> None:
        self.url = normalize_url(url)
        self.token = token.strip() if token and token.strip() else None
        self.timeout, self.segment_timeout = float(timeout), float(segment_timeout)
        self.max_upload_bytes = 0  # learnt from /v1/info: larger uploads are refused before sending

    # ------------------------------------------------------------------------------------- endpoints
    def health(self) -> dict:
        """``GET /v1/health`` (no token needed): ``{"status": "ok"}`` when the server runs."""
        return self._request("GET", "/v1/health", action="checking the server")

    def info(self) -> ServerInfo:
        """``GET /v1/info``; refuses servers of another API version."""
        data = self._request("GET", "/v1/info", action="reading the model info")
        if not isinstance(data, Mapping) or "api_version" not in data:
            raise MedSAMKitError(f"{self.url}/v1/info did not answer like medsam-kit serve (no api_version); "
                                 f"check the URL and port", kind="protocol")
        if data["api_version"] != API_VERSION:
            raise MedSAMKitError(f"the server speaks API v{data['api_version']} but this extension speaks "
                                 f"v{API_VERSION}: update the extension or the server so they match", kind="protocol")
        try:
            info = ServerInfo.from_json(data)
        except (KeyError, TypeError, ValueError) as err:
            raise MedSAMKitError(f"{self.url}/v1/info is malformed ({type(err).__name__}: {err})",
                                 kind="protocol") from None
        self.max_upload_bytes = info.max_upload_bytes
        return info

    def upload(self, data: bytes, filename: str = "volume.nrrd", progress: Progress | None = None) -> UploadedVolume:
        """``POST /v1/volumes``: upload one volume file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``) given as bytes.

        ``filename`` only tells the server which reader to use (it never becomes a server path).
        """
        total = len(data)
        if self.max_upload_bytes and total > self.max_upload_bytes:
            # A server refuses an oversized body by closing the connection mid-upload; say why up front.
            raise MedSAMKitError(f"{filename} is {format_size(total)}, over the server's upload limit of "
                                 f"{format_size(self.max_upload_bytes)}: crop the volume or start the server with a "
                                 f"larger --max-upload-mb", kind="usage")

        def chunks() -> Iterator[bytes]:
            for start in range(0, total, _CHUNK):
                yield data[start:start + _CHUNK]
                if progress is not None:
                    done = min(start + _CHUNK, total)
                    progress(done / total if total else 1.0,
                             f"Uploading {format_size(done)} / {format_size(total)}")

        query = urllib.parse.urlencode({"filename": os.path.basename(filename)})
        # The answer comes after the server has read (decompressed, checked) the whole file: wait as for a
        # segmentation, not as for a quick request.
        answer = self._request("POST", f"/v1/volumes?{query}", body=chunks(), length=total,
                               content_type="application/octet-stream", timeout=self.segment_timeout,
                               action="uploading the volume")
        try:
            return UploadedVolume.from_json(answer)
        except (KeyError, TypeError, ValueError) as err:
            raise MedSAMKitError(f"the upload answer of {self.url} is malformed ({err})", kind="protocol") from None

    def upload_file(self, path: str | os.PathLike, progress: Progress | None = None) -> UploadedVolume:
        """Upload a volume file from disk (its name picks the reader on the server)."""
        with open(path, "rb") as handle:
            return self.upload(handle.read(), os.path.basename(os.fspath(path)), progress)

    def volumes(self) -> list[dict]:
        """``GET /v1/volumes``: ``[{"id", "shape_zyx", "channels", "bytes"}, ...]``."""
        return list(self._request("GET", "/v1/volumes", action="listing volumes").get("volumes", []))

    def volume(self, volume_id: str) -> dict:
        """``GET /v1/volumes/{id}``: the upload answer plus the embedding-cache statistics."""
        return self._request("GET", f"/v1/volumes/{urllib.parse.quote(volume_id)}", action="reading the volume")

    def segment(self, volume_id: str, prompts: Mapping[str, Any], output: str = "seg.nrrd",
                progress: Progress | None = None) -> LabelMapResult:
        """``POST /v1/volumes/{id}/segment`` with a prompt document (``MedSAMKitLib.geometry.prompt_document``).

        The document must say its ``"coordinates"`` (and ``"space"`` for world coordinates).
        """
        if not isinstance(prompts, Mapping) or "coordinates" not in prompts:
            raise MedSAMKitError('the prompt document must state "coordinates" ("voxel" or "world")', kind="usage")
        body = json.dumps(prompts).encode("utf-8")
        return self._label_map(f"/v1/volumes/{urllib.parse.quote(volume_id)}/segment", output, body, progress,
                               "segmenting")

    def auto(self, volume_id: str, output: str = "seg.nrrd", progress: Progress | None = None) -> LabelMapResult:
        """``POST /v1/volumes/{id}/auto``: segment every label without prompts."""
        return self._label_map(f"/v1/volumes/{urllib.parse.quote(volume_id)}/auto", output, None, progress,
                               "auto-segmenting")

    def delete(self, volume_id: str) -> None:
        """``DELETE /v1/volumes/{id}``: forget the volume and its embeddings on the server."""
        self._request("DELETE", f"/v1/volumes/{urllib.parse.quote(volume_id)}", expect="none",
                      action="deleting the volume")

    # --------------------------------------------------------------------------------------- plumbing
    def _label_map(self, path: str, output: str, body: bytes | None, progress: Progress | None,
                   action: str) -> LabelMapResult:
        if output not in OUTPUTS:
            raise MedSAMKitError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}", kind="usage")
        if progress is not None:
            progress(None, f"Server is {action}...")
        content, headers = self._request(
            "POST", f"{path}?{urllib.parse.urlencode({'output': output})}", body=body,
            content_type="application/json" if body is not None else None, expect="bytes",
            timeout=self.segment_timeout, action=action, progress=progress)
        disposition = headers.get("Content-Disposition", "")
        filename = disposition.split("filename=", 1)[1].strip('"; ') if "filename=" in disposition \
            else {"seg.nrrd": "labels.seg.nrrd", "nrrd": "labels.nrrd", "nifti": "labels.nii.gz"}[output]
        try:
            labels = tuple(LabelInfo.from_json(item) for item in json.loads(headers.get("X-MedSAM-Labels", "[]")))
            stats = json.loads(headers.get("X-MedSAM-Stats", "{}"))
        except (ValueError, KeyError, TypeError) as err:
            raise MedSAMKitError(f"malformed X-MedSAM-Labels / X-MedSAM-Stats header from {self.url} ({err})",
                                 kind="protocol") from None
        return LabelMapResult(content, filename, labels, stats)

    def _request(self, method: str, path: str, *, body: bytes | Iterator[bytes] | None = None,
                 length: int | None = None, content_type: str | None = None, expect: str = "json",
                 timeout: float | None = None, action: str = "talking to the server",
                 progress: Progress | None = None):
        """One request; returns decoded JSON, ``(bytes, headers)`` or None depending on ``expect``."""
        headers = {"Accept": "application/json" if expect == "json" else "*/*", "User-Agent": "MedSAMKit-Slicer/1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        if body is not None and length is None and isinstance(body, (bytes, bytearray)):
            length = len(body)
        if length is not None:
            headers["Content-Length"] = str(length)
        elif method == "POST" and body is None:
            headers["Content-Length"] = "0"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        wait = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(request, timeout=wait) as response:
                if expect == "none":
                    return None
                content = self._read(response, progress)
                if expect == "bytes":
                    return content, response.headers
        except urllib.error.HTTPError as err:
            raise self._http_error(err, action) from None
        except urllib.error.URLError as err:
            raise self._transport_error(err.reason, action, wait, timeout is not None) from None
        except OSError as err:  # read timeouts and resets come unwrapped
            raise self._transport_error(err, action, wait, timeout is not None) from None
        try:
            return json.loads(content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise MedSAMKitError(f"{self.url}{path.split('?')[0]} did not answer with JSON while {action} (another "
                                 f"program on that port?); check the URL of `medsam-kit serve`", kind="protocol") \
                from None

    @staticmethod
    def _read(response, progress: Progress | None) -> bytes:
        total = int(response.headers.get("Content-Length") or 0)
        parts, done = [], 0
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            done += len(chunk)
            if progress is not None and total > _CHUNK:
                progress(min(done / total, 1.0),
                         f"Receiving the label map {format_size(done)} / {format_size(total)}")
        return b"".join(parts)

    def _http_error(self, err: urllib.error.HTTPError, action: str) -> MedSAMKitError:
        try:
            detail = _detail(err.read())
        except OSError:
            detail = ""
        detail = detail or err.reason or "no reason given"
        hints = {
            401: "set the token the server was started with (--token)",
            403: "connect with a name the server answers to (its --host address, or 127.0.0.1 through an SSH "
                 "tunnel), or start the server with --allowed-host NAME",
            404: "the server no longer has this volume (evicted or restarted); it is uploaded again on the next try",
            413: "the volume is over the server's upload limit; crop it or start the server with a larger "
                 "--max-upload-mb",
            415: "upload a .nrrd, .nii, .nii.gz or .mha file",
        }
        hint = hints.get(err.code)
        message = f"server refused {action} (HTTP {err.code}): {detail}" + (f" — {hint}" if hint else "")
        if err.code >= 500:
            message = f"server failed while {action} (HTTP {err.code}): {detail} — see the server's log"
        return MedSAMKitError(message, kind="http", status=err.code, detail=str(detail))

    def _transport_error(self, reason, action: str, wait: float, slow: bool) -> MedSAMKitError:
        """``slow``: the request waited ``segment_timeout`` (upload, segmentation), which the user can raise."""
        if isinstance(reason, (TimeoutError, socket.timeout)):  # distinct classes before Python 3.10
            if slow:
                hint = ("the server may be busy or the volume large: retry, or raise the timeout (MedSAM Kit panel: "
                        "Server > Timeout, then Connect)")
            else:  # health and info answer at once even while the model works: something between is wrong
                hint = ("a quick request went unanswered: check that the server is not stuck (its terminal / log), "
                        "the URL and port, and the SSH tunnel or firewall")
            return MedSAMKitError(f"no answer from {self.url} within {wait:g} s while {action}; {hint}",
                                  kind="timeout")
        if isinstance(reason, ssl.SSLError):
            return MedSAMKitError(f"TLS error talking to {self.url} ({reason}); use http:// for a plain "
                                  f"`medsam-kit serve` or an SSH tunnel", kind="unreachable")
        if isinstance(reason, (ConnectionResetError, BrokenPipeError)):  # includes http.client.RemoteDisconnected
            cause = "the server stopped, or the upload is over its size limit" if "upload" in action \
                else "the server stopped or restarted"
            return MedSAMKitError(f"the connection to {self.url} broke while {action} ({cause}); check the server's "
                                  f"log and retry", kind="dropped")
        if isinstance(reason, socket.gaierror):
            what = f"unknown host {urllib.parse.urlsplit(self.url).hostname!r}"
        elif isinstance(reason, ConnectionRefusedError):
            what = "connection refused"
        else:
            what = str(reason) or type(reason).__name__
        return MedSAMKitError(f"cannot reach the medsam-kit server at {self.url} ({what}) while {action}: start it "
                              f"with `medsam-kit serve --run RUN_DIR`, or check the URL / SSH tunnel",
                              kind="unreachable")
