"""``medsam-kit predict`` never writes onto what it reads, and replaces an existing output only with
``--overwrite``; a batch skips the cases already done (so a stopped batch resumes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.infer.segmenter import Segmenter
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

MODEL = ["--model", "sam_vit_tiny_test"]


def _volume(seed: int = 0) -> Volume:
    array = (np.random.default_rng(seed).random((3, 20, 24)) * 200).astype(np.int16)
    return Volume(array, Geometry(spacing=(1.0, 1.0, 2.0)))


@pytest.fixture
def case(tmp_path):
    return write_volume(tmp_path / "in" / "case_a.nii.gz", _volume())


@pytest.fixture
def segmented(monkeypatch):
    """Names of the volumes segmented (by their first voxel, unique per seed) in the order segmented."""
    seen = []
    original = Segmenter.segment_volume

    def spy(self, volume, prompts=None, **kwargs):
        seen.append(int(volume.array.flat[0]))
        return original(self, volume, prompts, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_volume", spy)
    return seen


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("medsam-kit predict: error: ")
    return lines[0]


# ------------------------------------------------------------------ never onto an input
def test_output_onto_the_input_is_refused_even_with_overwrite(case, capsys, segmented):
    before = _snapshot(case.parent)
    for extra in ([], ["--overwrite"]):
        assert main(["predict", *MODEL, "--input", str(case), "--output", str(case), *extra]) == 2
        error = _one_line_error(capsys)
        assert f"--output {case} would overwrite the input {case} (--input)" in error
    assert _snapshot(case.parent) == before and segmented == []


def test_output_folder_holding_the_inputs_is_refused(tmp_path, capsys, segmented):
    folder = tmp_path / "scans"
    for n, name in enumerate(("a", "b")):
        write_volume(folder / f"{name}.nii.gz", _volume(n))
    (tmp_path / "alias").symlink_to(folder)  # the same folder under another name
    before = _snapshot(folder)
    for output in (folder, tmp_path / "alias", tmp_path / "scans" / ".." / "scans"):
        assert main(["predict", *MODEL, "--input", str(folder), "--output", str(output), "--overwrite"]) == 2
        assert f"would overwrite the input {folder / 'a.nii.gz'} (--input)" in _one_line_error(capsys)
    assert _snapshot(folder) == before and segmented == []


def test_sidecar_onto_a_prompt_file_is_refused(case, tmp_path, capsys, segmented):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "case_a.json").write_text(json.dumps({"labels": {"class_1": {"1": {"boxes": [[2, 2, 12, 12]]}}}}),
                                         encoding="utf-8")
    before = _snapshot(prompts)
    assert main(["predict", *MODEL, "--input", str(case), "--prompts", str(prompts), "--output", str(prompts)]) == 2
    assert f"would overwrite the input {prompts / 'case_a.json'} (--prompts)" in _one_line_error(capsys)
    assert _snapshot(prompts) == before and segmented == []  # no label file written beside it either


def test_output_onto_the_checkpoint_is_refused(case, tmp_path, capsys):
    import torch

    from medsam_kit.models import load_model, save_checkpoint

    torch.manual_seed(0)
    weights = save_checkpoint(load_model("sam_vit_tiny_test", in_channels=1, num_classes=1), tmp_path / "model.h5")
    before = weights.read_bytes()
    assert main(["predict", *MODEL, "--checkpoint", str(weights), "--input", str(case), "--output", str(weights),
                 "--overwrite"]) == 2
    assert f"would overwrite the input {weights} (--checkpoint)" in _one_line_error(capsys)
    assert weights.read_bytes() == before


def test_data_file_of_a_detached_header_input_is_protected(tmp_path, capsys, segmented):
    write_volume(tmp_path / "shared.mhd", _volume())  # shared.mhd + shared.zraw
    (tmp_path / "shared.mhd").rename(tmp_path / "scan.mhd")  # the header still names shared.zraw
    before = _snapshot(tmp_path)
    assert read_volume(tmp_path / "scan.mhd").array.shape == (3, 20, 24)
    # writing shared.mhd would (re)write its data file shared.zraw: the input's pixels
    assert main(["predict", *MODEL, "--input", str(tmp_path / "scan.mhd"), "--output", str(tmp_path / "shared.mhd"),
                 "--overwrite"]) == 2
    assert f"would overwrite the input {tmp_path / 'shared.zraw'} (--input)" in _one_line_error(capsys)
    assert _snapshot(tmp_path) == before and segmented == []


def test_data_file_named_with_a_space_is_protected(tmp_path, capsys, segmented):
    """MetaIO reads the whole rest of the line as one file name, spaces included."""
    write_volume(tmp_path / "my scan.mhd", _volume())  # my scan.mhd + my scan.zraw
    (tmp_path / "my scan.mhd").rename(tmp_path / "scan.mhd")
    before = _snapshot(tmp_path)
    assert main(["predict", *MODEL, "--input", str(tmp_path / "scan.mhd"), "--output", str(tmp_path / "my scan.mhd"),
                 "--overwrite"]) == 2
    assert f"would overwrite the input {tmp_path / 'my scan.zraw'} (--input)" in _one_line_error(capsys)
    assert _snapshot(tmp_path) == before and segmented == []


def test_overwriting_a_header_never_deletes_the_data_file_it_named(tmp_path, segmented):
    """An existing output header naming the input's data file (a copy of the input header): replacing that
    output must not delete the file the old header pointed at."""
    write_volume(tmp_path / "case.mhd", _volume())  # case.mhd + case.zraw
    shutil.copy(tmp_path / "case.mhd", tmp_path / "seg.mhd")  # seg.mhd names case.zraw
    data = (tmp_path / "case.zraw").read_bytes()
    assert main(["predict", *MODEL, "--input", str(tmp_path / "case.mhd"), "--output", str(tmp_path / "seg.mhd"),
                 "--overwrite"]) == 0
    assert (tmp_path / "case.zraw").read_bytes() == data
    assert read_volume(tmp_path / "case.mhd").array.shape == (3, 20, 24)
    assert read_volume(tmp_path / "seg.mhd").array.shape == (3, 20, 24)


def test_two_inputs_with_one_output_name_are_refused(tmp_path, capsys, segmented):
    folder = tmp_path / "scans"
    write_volume(folder / "a.nii.gz", _volume(0))
    write_volume(folder / "a.nrrd", _volume(1))
    assert main(["predict", *MODEL, "--input", str(folder), "--output", str(tmp_path / "out")]) == 2
    error = _one_line_error(capsys)
    assert f"{folder / 'a.nii.gz'} and {folder / 'a.nrrd'} would both write {tmp_path / 'out' / 'a.nii.gz'}" in error
    assert not (tmp_path / "out").exists() and segmented == []


# ------------------------------------------------------------------ existing outputs
def test_existing_output_is_replaced_only_with_overwrite(case, tmp_path, capsys, segmented):
    out = tmp_path / "out" / "pred.nii.gz"
    argv = ["predict", *MODEL, "--input", str(case), "--output", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = _snapshot(out.parent)
    assert main(argv) == 2
    error = _one_line_error(capsys)
    assert f"--output {out} already exists; pass --overwrite to replace it" in error
    assert _snapshot(out.parent) == before and len(segmented) == 1
    out.unlink()  # a sidecar alone is an earlier output too
    assert main(argv) == 2
    assert f"{out.with_name('pred.json')} already exists" in _one_line_error(capsys)
    assert main([*argv, "--overwrite"]) == 0
    assert len(segmented) == 2 and read_volume(out).array.shape == (3, 20, 24)


def test_batch_skips_cases_already_done_and_says_so(tmp_path, capsys, segmented):
    folder = tmp_path / "scans"
    for n, name in enumerate(("a", "b", "c")):
        write_volume(folder / f"{name}.nii.gz", _volume(n))
    out = tmp_path / "out"
    argv = ["predict", *MODEL, "--input", str(folder), "--output", str(out)]
    assert main(argv) == 0
    first = list(segmented)
    for path in out.glob("b*"):  # b's outputs never written: the batch was stopped there
        path.unlink()
    done = {name: (out / name).stat().st_mtime_ns for name in ("a.nii.gz", "a.json", "c.nii.gz", "c.json")}
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert segmented[3:] == [first[1]]  # only b
    assert "skipped 2 existing outputs (use --overwrite to redo them)" in printed.out + printed.err
    assert {name: (out / name).stat().st_mtime_ns for name in done} == done
    assert (out / "b.nii.gz").is_file() and (out / "b.json").is_file()
    assert main([*argv, "--overwrite"]) == 0
    assert segmented[4:] == first
    assert "skipped" not in capsys.readouterr().out


def test_batch_refuses_a_file_output_before_skipping(tmp_path, capsys):
    folder = tmp_path / "scans"
    write_volume(folder / "a.nii.gz", _volume(0))
    shutil.copy(folder / "a.nii.gz", folder / "b.nii.gz")
    assert main(["predict", *MODEL, "--input", str(folder), "--output", str(tmp_path / "x.nii.gz")]) == 2
    assert "names a file but --input holds 2 volumes" in _one_line_error(capsys)


def test_output_folder_that_is_a_file_is_one_line(case, tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a folder")
    assert main(["predict", *MODEL, "--input", str(case), "--output", str(tmp_path / "model.pt")]) == 2
    assert "a file stands where its folder should be" in _one_line_error(capsys)
    assert (tmp_path / "model.pt").read_bytes() == b"not a folder"
