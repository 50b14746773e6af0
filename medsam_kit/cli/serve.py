"""``medsam-kit serve``: run the HTTP inference server (API v1, :mod:`medsam_kit.serve`) for 3D Slicer and scripts.

The model is loaded exactly as ``medsam-kit predict`` loads it (``--run`` or ``--model`` /
``--checkpoint``, same options), then served by uvicorn until Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import os

from medsam_kit.cli.predict import add_model_arguments

TOKEN_ENV = "MEDSAM_KIT_TOKEN"

_EPILOG = f"""\
security:
  The server binds 127.0.0.1 (this machine only) by default. Another --host (e.g. 0.0.0.0 on a
  GPU box) is refused unless --token is given; clients then send 'Authorization: Bearer TOKEN'
  with every request. --token may come from the {TOKEN_ENV} environment variable instead, so it
  does not show in the process list. Uploads are limited by --max-upload-mb; open volumes and
  their slice embeddings together by --max-memory-mb (least recently used volumes are evicted).

  Web pages: requests must name the server in their Host header -- localhost, 127.0.0.1, [::1],
  the --host address or an --allowed-host name (any port) -- so a page rebound to this machine
  (DNS rebinding) is refused (403). With --host 0.0.0.0 or :: any name is answered (the token then
  guards every request) unless --allowed-host names are given. Requests that a browser marks as
  coming from another web page (an Origin header, Sec-Fetch-Site: cross-site) are refused too,
  so a page cannot upload to a loopback server without a token (CSRF); --allowed-origin lets one
  web viewer in (with CORS headers). The 3D Slicer extension, curl and scripts send no Origin.

endpoints (JSON; OpenAPI schema at /openapi.json, browsable at /docs):
  GET /v1/health, GET /v1/info, POST /v1/volumes?filename=NAME (raw .nrrd/.nii/.nii.gz/.mha bytes),
  GET /v1/volumes[/ID], POST /v1/volumes/ID/segment (prompt JSON), POST /v1/volumes/ID/auto,
  DELETE /v1/volumes/ID; results ?output=seg.nrrd (default, 3D Slicer) | nrrd | nifti.

examples:
  medsam-kit serve --run runs/acdc
  medsam-kit serve --run runs/acdc --allowed-origin http://localhost:3000   # a local web viewer
  export MEDSAM_KIT_TOKEN=$(openssl rand -hex 16)   # give the same token to the Slicer extension
  medsam-kit serve --model sam2.1_hiera_tiny --checkpoint sam2.1_hiera_tiny.pt --device cuda \\
      --host 0.0.0.0 --port 8000 --allowed-host gpu-box.lab.example.org
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP inference server (3D Slicer extension, scripts)",
        description="Serve a model over HTTP (FastAPI + uvicorn): clients upload a volume, then segment it\n"
                    "from prompts or automatically and receive label maps (NRRD, NIfTI or Slicer .seg.nrrd)\n"
                    "on the uploaded grid. Slice embeddings are computed once per volume and reused.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine "
                                                            "only; any other needs --token)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                        help=f"bearer token clients must send (default: ${TOKEN_ENV}); required off loopback")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header is NAME (the name clients use for this "
                             "machine, e.g. gpu-box.lab.org; any port); repeatable. Default: localhost, 127.0.0.1, "
                             "[::1] and the --host address; any name with --host 0.0.0.0 / ::. '*': any name")
    parser.add_argument("--allowed-origin", action="append", default=[], metavar="URL",
                        help="let the web page at URL (scheme://host[:port], e.g. http://localhost:3000) send "
                             "requests, with CORS headers; repeatable. Default: none, requests with another "
                             "Origin header are refused (403)")
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda, "
                                                         "cuda:1 ... (default auto)")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload in MiB (default 1024)")
    parser.add_argument("--max-memory-mb", type=int, default=4096,
                        help="bound on open volumes + their embeddings in MiB; least recently used volumes are "
                             "evicted past it (default 4096)")
    parser.set_defaults(func=run)


def allowed_hosts_for(host: str, extra: list[str]) -> list[str]:
    """The Host names answered besides the loopback ones: the bound address and ``--allowed-host`` names.

    An unspecified address (``0.0.0.0``, ``::``, empty: every interface) is reached under names and
    addresses the server cannot list, so it answers any name (``*``) -- :func:`check_bind` already
    demands a token there -- unless the operator names the ones to answer.
    """
    try:
        every_interface = not host.strip() or ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        every_interface = False
    if every_interface:
        return list(extra) or ["*"]
    return [host, *extra]


def _check_limits(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port (0-65535)")
    for flag in ("max_upload_mb", "max_memory_mb", "cache_mb", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from medsam_kit.cli.predict import make_segmenter
    from medsam_kit.engine.trainer import resolve_device
    from medsam_kit.serve.app import check_bind, create_app
    from medsam_kit.serve.guard import normalize_origin

    check_bind(args.host, args.token)  # before the model loads: a refused bind fails at once
    _check_limits(args)
    hosts = allowed_hosts_for(args.host, args.allowed_host)
    origins = [normalize_origin(origin) for origin in args.allowed_origin]
    args.device = str(resolve_device(args.device))
    segmenter = make_segmenter(args)
    app = create_app(segmenter, token=args.token, max_upload_bytes=args.max_upload_mb << 20,
                     max_session_bytes=args.max_memory_mb << 20, allowed_hosts=hosts, allowed_origins=origins)
    info = app.state.server.model
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"medsam-kit serve: {info['name']} ({info['in_channels']} channel(s), {info['num_classes']} label(s)) on "
          f"{args.device} at http://{host}:{args.port}/v1 (docs: /docs){', token required' if args.token else ''}"
          f"{', any Host name' if '*' in hosts else ''}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if getattr(args, "verbose", False) else "warning")
    return 0
