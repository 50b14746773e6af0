"""File names that are digits to ``str.isdigit`` but not to ``int()`` (superscripts) sort like any name."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medsam_kit.io import Geometry, Volume, read_volume, write_volume


def _file_system_takes(name: str) -> bool:
    try:
        name.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.skipif(not _file_system_takes("\u00b2"), reason="ASCII-only file names under this locale")
def test_slice_folder_with_superscript_digits_in_names(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for k in (2, 1, 10):  # natural order: 1, 2, 10
        write_volume(folder / f"s1\u00b2{k}.png", Volume(np.full((1, 4, 5), k, np.uint8), Geometry()))
    volume = read_volume(folder)
    assert volume.array.shape == (3, 4, 5)
    assert [int(volume.array[z, 0, 0]) for z in range(3)] == [1, 2, 10]
