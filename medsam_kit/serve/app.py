"""HTTP API v1 of ``medsam-kit serve``: :func:`create_app` builds the FastAPI application.

Endpoints (all JSON unless noted; errors are ``{"detail": "<one line>"}``):

=======================================  =====================================================
``GET /v1/health``                       ``{"status": "ok"}``; never needs the token
``GET /v1/info``                         model, channels (names, accepted counts), labels, limits
``POST /v1/volumes?filename=NAME``       raw bytes of one .nrrd / .nii / .nii.gz / .mha -> 201
``GET /v1/volumes``                      the open volumes
``GET /v1/volumes/{id}``                 one volume, with its embedding-cache share
``POST /v1/volumes/{id}/segment``        prompt document (JSON) -> label map file
``POST /v1/volumes/{id}/auto``           no body -> label map file of every label
``DELETE /v1/volumes/{id}``              204; the volume and its embeddings are dropped
=======================================  =====================================================

Label map answers are the file bytes (``?output=seg.nrrd`` default, ``nrrd`` or ``nifti``) on the
uploaded grid with its geometry, with headers ``X-MedSAM-Labels`` (``[{"value", "name", "color"}]``)
and ``X-MedSAM-Stats`` (``{"seconds", "encoded_slices"}``: the encoder work this request caused;
0 when every slice it needed was already embedded, the interactive case).

Safety: with a ``token`` every ``/v1`` request but health needs ``Authorization: Bearer <token>``
(401 otherwise); :func:`check_bind` refuses a non-loopback address without one. Every request must name
the server in ``Host`` and must not come from another web page (``Origin``, ``Sec-Fetch-Site``) unless
allowed: 403 otherwise (:mod:`medsam_kit.serve.guard`: DNS rebinding, CSRF). Uploads are size
checked from ``Content-Length`` and while streaming, stored under server-chosen names and read with
:func:`medsam_kit.io.read_volume` (see :mod:`medsam_kit.serve.files`); prompt documents are limited
to 1 MiB and validated by :func:`medsam_kit.prompts.parse_prompts`. Every refusal is a 4xx with one
line; an unexpected exception is logged here and answered ``500 {"detail": "internal error: <type>"}``
without a traceback; a client that hangs up mid-request is one log line. Client text (file names,
paths, headers) reaches log records only through :func:`~medsam_kit.serve.errors.quoted`.

Threading: model endpoints are plain ``def`` (run in the server's thread pool) and meet at the
:class:`~medsam_kit.serve.runner.ModelRunner` lock; health and info are ``async`` (no locks), so they
answer even when every pool thread waits for the model; the upload endpoint is ``async`` only to
stream the body to disk, and reads the file in the thread pool. Sessions live in a
:class:`~medsam_kit.serve.sessions.SessionStore` (LRU under ``max_session_bytes``).
"""

from __future__ import annotations

import hmac
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from medsam_kit import __version__
from medsam_kit.prompts import parse_prompts
from medsam_kit.serve import schemas
from medsam_kit.serve.colors import label_table
from medsam_kit.serve.errors import ApiError, quoted
from medsam_kit.serve.files import OUTPUT_FILES, encode_labels, read_upload, upload_suffix
from medsam_kit.serve.guard import RequestGuard, is_loopback, normalize_origin
from medsam_kit.serve.runner import ModelRunner
from medsam_kit.serve.sessions import Session, SessionStore

log = logging.getLogger("medsam_kit.serve")

API_VERSION = 1
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB: a 512x512x1000 float32 CT, or four BraTS channels with room to spare
DEFAULT_MAX_SESSION_BYTES = 4 << 30
MAX_PROMPT_BYTES = 1 << 20  # a prompt document is a few KiB; 1 MiB leaves room for thousands of points
Output = Literal["seg.nrrd", "nrrd", "nifti"]
Refine = Literal["auto", "decoder", "none"]
# Module level: with postponed annotations FastAPI resolves these names from the module's globals.
VolumeId = Annotated[str, PathParam(description="volume id returned by POST /v1/volumes")]
OutputQuery = Annotated[Output, Query(description="label map file format")]
RefineQuery = Annotated[Refine | None, Query(description="automatic refinement: 'auto' the coarse labels improved "
                                                     "by the decoder where they agree, 'decoder' the decoder's "
                                                     "masks alone, 'none' the coarse head alone (default: the "
                                                     "server's --refine)")]
Filename = Annotated[str, Query(min_length=1, max_length=255, description="client file name; its suffix (.nrrd, "
                                ".nii, .nii.gz, .mha) picks the reader")]
PromptDocument = Annotated[dict[str, Any], Body()]
_ERRORS = {status: {"model": schemas.ErrorDetail} for status in (400, 401, 403, 404, 413, 415, 422)}
_LABEL_FILE = {
    "description": "label map (uint8, values = label values) on the uploaded volume's grid and geometry",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        "X-MedSAM-Labels": {"description": 'compact JSON [{"value", "name", "color": [r, g, b]}, ...]',
                            "schema": {"type": "string"}},
        "X-MedSAM-Stats": {"description": 'compact JSON {"seconds": float, "encoded_slices": int}',
                           "schema": {"type": "string"}},
    },
}


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``ValueError``, one line) to serve on a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} is reachable from other machines; give --token SECRET (clients send "
                         f"'Authorization: Bearer SECRET') or bind 127.0.0.1")


class _Server:
    """What the endpoints share: the model runner, the session store and the model's description."""

    def __init__(self, segmenter, token: str | None, max_upload_bytes: int, max_session_bytes: int,
                 model_name: str | None) -> None:
        if max_upload_bytes <= 0:
            raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
        self.runner = ModelRunner(segmenter)
        self.sessions = SessionStore(max_session_bytes)
        self.token = token
        self.max_upload_bytes = int(max_upload_bytes)
        model, plan = segmenter.model, segmenter.plan
        self.label_names = dict(segmenter.label_names)
        self.labels = label_table(self.label_names)
        self.labels_header = json.dumps(self.labels, separators=(",", ":"))
        in_channels = int(model.in_channels)
        self.channels = ([str(c) for c in plan.channel_names] if plan is not None
                         else [f"channel_{c}" for c in range(in_channels)])
        self.accepted_channels = segmenter.accepted_channel_counts
        name = model_name or getattr(model, "config", {}).get("model_name") or type(model).__name__
        self.model = {"name": str(name), "image_size": int(model.image_size), "in_channels": in_channels,
                      "num_classes": int(model.num_classes)}

    def info(self) -> dict:
        return {"api_version": API_VERSION, "medsam_kit_version": __version__, "model": self.model,
                "channels": self.channels, "accepted_channels": self.accepted_channels, "labels": self.labels,
                "max_upload_bytes": self.max_upload_bytes, "formats": list(OUTPUT_FILES),
                "coordinates": ["voxel", "world"]}

    def add(self, volume) -> Session:
        session, drop = self.sessions.add(volume)
        self.runner.drop(drop)
        log.info("volume %s: %s %s, %d open", session.id, quoted(volume.meta.get("filename")),
                 volume.spatial_shape, len(self.sessions))
        return session

    def segment(self, volume_id: str, document: dict | None, output: str, refine: str | None = None) -> Response:
        session = self.sessions.get(volume_id)
        prompts = None if document is None else self._prompts(document, session)
        try:
            result, report = self.runner.segment(session.volume, prompts, refine)
        except ValueError as err:  # the Segmenter's one-line refusals (channels, prompts off the volume)
            raise ApiError(422, str(err)) from None
        self.runner.drop(self.sessions.record_embeddings(session.id, report.new_ids, report.usage))
        content, filename = encode_labels(result.labels, session.volume.geometry, self.labels, output)
        stats = {"seconds": round(report.seconds, 4), "encoded_slices": int(report.encoded_slices)}
        log.info("volume %s: %s in %.2f s, %d slices encoded", session.id, result.mode, report.seconds,
                 report.encoded_slices)
        return Response(content, media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-MedSAM-Labels": self.labels_header,
            "X-MedSAM-Stats": json.dumps(stats, separators=(",", ":")),
        })

    def _prompts(self, document: dict, session: Session):
        if "coordinates" not in document:
            raise ApiError(422, 'prompts: "coordinates" is required: say whether the prompts are "voxel" (x column, '
                                'y row on slice k) or "world" (mm) coordinates')
        if document.get("coordinates") == "world" and "space" not in document:
            raise ApiError(422, 'prompts: "space" is required with world coordinates: "LPS" (ITK, DICOM) or "RAS" '
                                '(3D Slicer, NIfTI)')
        volume = session.volume
        try:
            return parse_prompts(document, volume.spatial_shape, volume.geometry, self.label_names, source="prompts")
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        except (TypeError, OverflowError) as err:  # OverflowError: a 400-digit JSON integer as a coordinate
            raise ApiError(422, f"prompts: a value cannot be used as a coordinate ({err})") from None


# ---------------------------------------------------------------------------- error handlers
def _one_line_validation(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        position = first["loc"][-1] if first.get("loc") else "?"
        reason = (first.get("ctx") or {}).get("error", "")
        return f"body: not valid JSON at character {position} ({reason}); send the prompt document as JSON"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(_one_line_validation(exc).split())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = " ".join(str(exc.detail).split())
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        log.info("client disconnected during %s %s", request.method, quoted(request.url.path))
        return Response(status_code=400)  # uvicorn sends nothing (and logs no access line) to a closed connection

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, quoted(request.url.path), exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


class _BodyLimit:
    """ASGI middleware: every request body except an upload is at most ``limit`` bytes (413 otherwise).

    Checked from ``Content-Length`` before the endpoint runs and again while the body is read (a
    chunked body has no length), so a client cannot make the server buffer an endless JSON document.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    def _refusal(self) -> str:
        return f"request body over {self.limit} bytes; prompt documents are small (uploads go to POST /v1/volumes)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/volumes"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > self.limit:
            return await JSONResponse({"detail": self._refusal()}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if received > self.limit:  # surfaces through FastAPI's body reading as this HTTPException
                raise StarletteHTTPException(413, self._refusal())
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------------------- the application
def create_app(segmenter, *, token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES, model_name: str | None = None,
               allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()) -> FastAPI:
    """The FastAPI application of HTTP API v1 around one :class:`~medsam_kit.infer.Segmenter`.

    Args:
        segmenter: the Segmenter every request uses (its label names, plan channels and cache).
        token: when given, every ``/v1`` request except ``GET /v1/health`` needs
            ``Authorization: Bearer <token>``.
        max_upload_bytes: largest upload body accepted (413 beyond).
        max_session_bytes: bound on open volumes + their embeddings; least recently used volumes
            are evicted past it (a later request for one answers 404 "... evicted ...").
        model_name: name shown by ``/v1/info`` (default: the model's registry name).
        allowed_hosts: ``Host`` names answered besides ``localhost``, ``127.0.0.1`` and ``[::1]`` (any
            port): the bound address and the names clients use for it; ``"*"`` answers any name. Other
            names are refused (403), which stops DNS rebinding pages.
        allowed_origins: web page origins (``scheme://host[:port]``) allowed to send requests, with
            CORS headers for them. Requests carrying any other ``Origin`` (or a cross-site
            ``Sec-Fetch-Site``) are refused (403), which stops cross-site request forgery.

    Returns:
        The application (``app.state.server`` holds the runner and the session store).
    """
    server = _Server(segmenter, token, max_upload_bytes, max_session_bytes, model_name)
    app = FastAPI(title="medsam-kit server", version=__version__,
                  description="Segment uploaded 3D volumes with a SAM-family model (medsam_kit HTTP API v1).")
    app.state.server = server
    app.add_middleware(_BodyLimit, limit=MAX_PROMPT_BYTES)
    origins = sorted({normalize_origin(origin) for origin in allowed_origins})
    if origins:  # browsers need CORS answers (and preflights) before a page may read or send with headers
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Content-Disposition", "X-MedSAM-Labels", "X-MedSAM-Stats"])
    app.add_middleware(RequestGuard, allowed_hosts=list(allowed_hosts), allowed_origins=origins)  # outermost
    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="the server's --token")

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:  # noqa: B008
        sent = credentials.credentials.encode("utf-8", "replace") if credentials is not None else b""
        if not hmac.compare_digest(sent, server.token.encode("utf-8", "replace")):  # type: ignore[union-attr]
            raise ApiError(401, "missing or wrong token; send the header 'Authorization: Bearer <token>' with the "
                                "token the server was started with")

    auth = [Depends(require_token)] if token else []

    @app.get("/v1/health", response_model=schemas.Health, tags=["server"])
    async def health() -> dict:  # async: answers even while every pool thread waits for the model
        """Liveness check; never needs the token."""
        return {"status": "ok"}

    @app.get("/v1/info", response_model=schemas.Info, dependencies=auth, responses=_ERRORS, tags=["server"])
    async def info() -> dict:
        """The model, its input channels, its labels (names and colours) and the server's limits."""
        return server.info()

    @app.post("/v1/volumes", status_code=201, response_model=schemas.VolumeCreated, dependencies=auth,
              responses=_ERRORS, tags=["volumes"], openapi_extra={"requestBody": {
                  "required": True, "description": "the raw bytes of ONE volume file",
                  "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_volume(request: Request, filename: Filename) -> dict | Response:
        """Upload one volume (multi-channel: a 4D NIfTI or multi-component NRRD, channels in the model's order)."""
        suffix = upload_suffix(filename)
        declared = request.headers.get("content-length")
        is_count = declared is not None and declared.strip().isascii() and declared.strip().isdigit()  # "²" is a digit
        if declared is not None and (not is_count or int(declared) > server.max_upload_bytes):
            if not is_count:
                raise ApiError(400, f"Content-Length {declared[:40]!r} is not a byte count")
            raise ApiError(413, f"upload of {int(declared)} bytes is over the server's limit of "
                                f"{server.max_upload_bytes} bytes (--max-upload-mb)")
        folder = Path(tempfile.mkdtemp(prefix="medsam-upload-"))  # private (0700), deleted below
        try:
            path, size = folder / f"upload{suffix}", 0
            with open(path, "wb") as handle:
                try:
                    async for chunk in request.stream():  # small blocking writes: the page cache absorbs them
                        size += len(chunk)
                        if size > server.max_upload_bytes:
                            raise ApiError(413, f"upload is over the server's limit of {server.max_upload_bytes} "
                                                f"bytes (--max-upload-mb)")
                        handle.write(chunk)
                except ClientDisconnect:  # a cancelled upload or a lost network: not a server error
                    log.warning("client disconnected during upload of %s after %d bytes", quoted(filename), size)
                    return Response(status_code=400)  # never sent: the connection is gone
            if size == 0:
                raise ApiError(400, "empty body; send the volume file's bytes with Content-Type: "
                                    "application/octet-stream")
            volume = await run_in_threadpool(read_upload, path, filename, server.accepted_channels,
                                             server.sessions.max_bytes)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        session = await run_in_threadpool(server.add, volume)
        return session.describe()

    @app.get("/v1/volumes", response_model=schemas.VolumeList, dependencies=auth, responses=_ERRORS,
             tags=["volumes"])
    def list_volumes() -> dict:
        """Open volumes, least recently used first."""
        return {"volumes": [s.summary() for s in server.sessions.list()]}

    @app.get("/v1/volumes/{volume_id}", response_model=schemas.VolumeDetail, dependencies=auth,
             responses=_ERRORS, tags=["volumes"])
    def get_volume(volume_id: VolumeId) -> dict:
        """One volume: the upload response plus its memory and embedding-cache share."""
        session = server.sessions.get(volume_id)
        return {**session.describe(), "bytes": session.nbytes,
                "cache": {"entries": session.embedding_entries, "bytes": session.embedding_bytes}}

    @app.post("/v1/volumes/{volume_id}/segment", response_class=Response, dependencies=auth,
              responses={200: _LABEL_FILE, **_ERRORS}, tags=["segmentation"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": schemas.PROMPT_DOCUMENT_SCHEMA}}}})
    def segment(volume_id: VolumeId, document: PromptDocument,
                output: OutputQuery = "seg.nrrd") -> Response:
        """Segment from prompts (the prompt document of medsam_kit.prompts.user_file; "coordinates" required)."""
        return server.segment(volume_id, document, output)

    @app.post("/v1/volumes/{volume_id}/auto", response_class=Response, dependencies=auth,
              responses={200: _LABEL_FILE, **_ERRORS}, tags=["segmentation"])
    def auto(volume_id: VolumeId, output: OutputQuery = "seg.nrrd", refine: RefineQuery = None) -> Response:
        """Segment every label automatically (coarse head -> key slice prompts -> decoder -> propagation; the
        coarse labels improved by the decoder where they agree, unless ``refine`` says otherwise)."""
        return server.segment(volume_id, None, output, refine)

    @app.delete("/v1/volumes/{volume_id}", status_code=204, response_class=Response, dependencies=auth,
                responses=_ERRORS, tags=["volumes"])
    def delete_volume(volume_id: VolumeId) -> Response:
        """Forget a volume and its embeddings."""
        _, drop = server.sessions.remove(volume_id)
        server.runner.drop(drop)
        return Response(status_code=204)

    return app
