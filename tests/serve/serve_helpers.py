"""Helpers for server tests: volume files, uploads, prompt documents, a live uvicorn server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medsam_kit.io import Geometry, Volume, write_volume

LABELS = {0: "background", 1: "liver", 2: "tumour"}
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Oblique LPS grid: rotated 30 degrees about z and tilted, anisotropic spacing, off-centre origin.
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
_tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
OBLIQUE = Geometry((0.8, 0.9, 2.5), (12.5, -40.25, 31.0),
                   tuple(map(tuple, np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ _tilt)))


def random_volume(shape, seed: int = 0, channels: int | None = None) -> np.ndarray:
    """int16 ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) volume with a bright block, so prompts have something to find."""
    rng = np.random.default_rng(seed)
    full = (channels, *shape) if channels else tuple(shape)
    array = rng.normal(100, 20, full)
    z, y, x = shape
    array[..., :, y // 4: 3 * y // 4, x // 4: 3 * x // 4] += 300
    return array.astype(np.int16)


def volume_bytes(tmp_path: Path, array: np.ndarray, geometry: Geometry = OBLIQUE, suffix: str = ".nrrd") -> bytes:
    """The bytes of ``array`` written as a volume file (``.nrrd`` / ``.nii`` / ``.nii.gz`` / ``.mha``)."""
    path = write_volume(tmp_path / f"upload_{time.perf_counter_ns()}{suffix}", Volume(array, geometry))
    return path.read_bytes()


def upload(client, data: bytes, filename: str = "case.nrrd", headers=AUTH):
    return client.post("/v1/volumes", params={"filename": filename}, content=data,
                       headers={**headers, "Content-Type": "application/octet-stream"})


def box_prompt(k: int, box, label: str = "liver") -> dict:
    return {"coordinates": "voxel", "labels": {label: {str(k): {"boxes": [list(box)]}}}}


@contextmanager
def live_server(app, **config) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its base URL.

    ``config``: more ``uvicorn.Config`` arguments (e.g. ``log_config=None, log_level="info"`` to see its logs).
    """
    import uvicorn

    options = {"log_level": "warning", "lifespan": "off", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def captured_logs(*names: str) -> Iterator[list]:
    """Every record of the named loggers (and their children) while the block runs, at DEBUG.

    A handler on the loggers themselves, not the root: uvicorn's default logging setup stops its loggers
    from propagating, so pytest's ``caplog`` would miss them once any live server has run.
    """
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
