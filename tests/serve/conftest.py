"""Fixtures for server tests: a tiny random-init model, Segmenters and TestClient apps around it.

Random weights: tests assert geometry, shapes, label values, determinism and encoder work, never Dice.
Plain helpers (volume files, uploads, a live uvicorn server) are in ``serve_helpers.py``.
"""

from __future__ import annotations

import pytest
import torch
from serve_helpers import LABELS, TOKEN


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(in_channels=1)``: random-init tiny SAM-2.1 (128 px, 2 classes), one per channel count."""
    from medsam_kit.models import load_model

    cache = {}

    def make(in_channels: int = 1):
        if in_channels not in cache:
            torch.manual_seed(0)
            cache[in_channels] = load_model("sam2.1_hiera_tiny_test", in_channels=in_channels, num_classes=2)
        return cache[in_channels]

    return make


@pytest.fixture
def make_segmenter(tiny_model):
    """``make_segmenter(in_channels=1)``: a fresh Segmenter (empty cache) around the shared tiny model."""
    from medsam_kit.infer import Segmenter

    def make(in_channels: int = 1, **kwargs):
        return Segmenter(tiny_model(in_channels), label_names=LABELS, **kwargs)

    return make


@pytest.fixture
def make_client(make_segmenter):
    """``make_client(segmenter=None, token=TOKEN, **create_app_kwargs) -> TestClient`` (5xx come back as responses).

    Requests go to ``http://127.0.0.1:8000`` (Host ``127.0.0.1:8000``): the server refuses unknown Host names.
    """
    from fastapi.testclient import TestClient

    from medsam_kit.serve import create_app

    def make(segmenter=None, token: str | None = TOKEN, **kwargs) -> TestClient:
        app = create_app(segmenter or make_segmenter(), token=token, **kwargs)
        return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)

    return make
