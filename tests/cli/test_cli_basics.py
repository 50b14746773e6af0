"""Every verb is registered, has --help, and user errors are one line with exit code 2."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from medsam_kit.cli.main import VERBS, main
from medsam_kit.io import Geometry, Volume, write_volume


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    importlib.import_module(f"medsam_kit.cli.{verb}")  # a listed verb must exist
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 200  # a real description, not just the usage line


def test_no_verb_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "VERB" in capsys.readouterr().out


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "medsam_kit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "medsam_kit" in result.stdout


def test_info_describes_a_volume(tmp_path, capsys):
    geometry = Geometry((0.5, 0.5, 4.0), (1.0, 2.0, 3.0))
    path = write_volume(tmp_path / "v.nii.gz", Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), geometry))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(2, 3, 4)" in out and "(0.5, 0.5, 4.0)" in out and "max 23" in out


def test_user_error_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    assert main(["info", str(tmp_path / "bad.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.nii.gz" in err and "Traceback" not in err
