"""The names the README documents are importable from the package root."""

from __future__ import annotations

import subprocess
import sys

import medsam_kit


def test_every_export_resolves():
    for name in medsam_kit.__all__:
        assert getattr(medsam_kit, name) is not None, name


def test_import_is_light():
    """`import medsam_kit` must not pull torch/monai (CLI start-up and Slicer-side tools stay fast)."""
    code = "import sys, medsam_kit; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
