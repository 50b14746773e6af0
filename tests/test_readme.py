"""The README's Python example runs as written (the README must stay true)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["problems"] == []
    assert namespace["scores"]["WT"]["dice"] == 1.0  # the label against itself
    assert 0.5 < namespace["result"].summary["classes"]["WT"]["dice"]["mean"] < 1.0
    assert (tmp_path / "out" / "seg_dicom").is_dir() and (tmp_path / "eval" / "summary.json").is_file()


def test_readme_models_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (models_block,) = [b for b in blocks if "coarse_logits" in b]
    namespace: dict = {}
    exec(compile(models_block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert tuple(namespace["coarse"].shape) == (2, 4, 128, 128)
    assert tuple(namespace["mask_logits"].shape) == (2, 1, 128, 128)


def test_readme_segmenter_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (block,) = [b for b in blocks if "segment_volume" in b]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    volume, result = namespace["volume"], namespace["result"]
    assert result.labels.shape == volume.array.shape and result.labels.dtype.name == "uint8"
    assert result.geometry.almost_equal(volume.geometry)
    assert namespace["auto"].mode == "automatic" and result.mode == "prompted"
    assert namespace["mask"].shape == volume.array.shape[1:]
