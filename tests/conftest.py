"""Shared fixtures: phantom datasets generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsam_kit.data.phantoms import generate_phantoms


def pytest_configure(config):
    """Share the cores among pytest-xdist workers: ``-n 2`` on 2 cores with torch's default 2 threads
    per worker oversubscribes the CPU, and torch's thread pools then run up to 10x slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # subprocesses (torchrun in the DDP test)
        import torch

        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def phantom_factory(tmp_path_factory):
    """``phantom_factory(dataset, cases=None, seed=0) -> Path``; cached per session.

    Treat the returned folder as read-only; copy it (``shutil.copytree``) before corrupting files.
    """
    cache: dict[tuple, Path] = {}

    def make(dataset: str, cases: int | None = None, seed: int = 0) -> Path:
        key = (dataset, cases, seed)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"phantom_{dataset}_{cases}_{seed}")
            cache[key] = generate_phantoms(dataset, root, cases=cases, seed=seed)
        return cache[key]

    return make
