"""Shared fixtures: phantom datasets generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsam_kit.data.phantoms import generate_phantoms


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
