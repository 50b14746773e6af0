"""Fixtures for engine tests: a small prepared ACDC phantom set."""

from __future__ import annotations

import pytest

from medsam_kit.data.cache import prepare


@pytest.fixture(scope="module")
def prepared(phantom_factory, tmp_path_factory):
    """5 phantom patients prepared: 2 train (4 frames), 1 val, 1 test, 1 unused (testing/)."""
    out = tmp_path_factory.mktemp("acdc_prepared")
    prepare("acdc", phantom_factory("acdc", cases=5), out)
    return out
