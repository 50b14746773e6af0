"""``medsam-kit predict`` with multi-channel inputs: BraTS dataset roots and one file per channel."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.cli.predict import _common_name
from medsam_kit.data.adapters import get_adapter
from medsam_kit.infer.segmenter import Segmenter
from medsam_kit.io import Geometry, Volume, read_volume, write_volume

MODALITIES = ("t1n", "t1c", "t2w", "t2f")
SLICES = slice(34, 38)  # four slices through the phantom's middle keep each case ~1 s


@pytest.fixture(scope="module")
def brats_root(phantom_factory, tmp_path_factory):
    """Two BraTS-2023-layout phantom cases cut to 4 slices (same files, names, dtypes, geometry)."""
    source = phantom_factory("brats", cases=2)
    root = tmp_path_factory.mktemp("brats_tiny")
    for record in get_adapter("brats").discover(source):
        for path in (*record.image_files, record.label_file):
            volume = read_volume(path)
            target = root / record.case_id / path.name
            write_volume(target, Volume(np.ascontiguousarray(volume.array[SLICES]), volume.geometry))
    return root


@pytest.fixture(scope="module")
def plan_checkpoint(tmp_path_factory):
    """``plan_checkpoint(channel_names) -> path``: a 4-channel medsam_kit checkpoint whose plan has those channels."""
    import torch

    from medsam_kit.data.preprocess import ChannelNormalization, PreprocessingPlan
    from medsam_kit.models import load_model, save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")

    def make(channel_names: tuple[str, ...]):
        path = folder / f"{'_'.join(channel_names)}.pt"
        if not path.exists():
            torch.manual_seed(0)
            model = load_model("sam_vit_tiny_test", in_channels=4, num_classes=1)
            norms = tuple(ChannelNormalization("percentile_scale", percentiles=(0.5, 99.5)) for _ in channel_names)
            plan = PreprocessingPlan("brats", "MRI", channel_names, {0: "background", 1: "tumour"}, norms)
            save_checkpoint(model, path, extra={"plan": plan.to_dict(), "label_names": {1: "tumour"}})
        return path

    return make


@pytest.fixture
def seen_volumes(monkeypatch):
    """The ``(C, Z, Y, X)`` arrays handed to ``Segmenter.segment_volume``, in call order."""
    seen = []
    original = Segmenter.segment_volume

    def spy(self, volume, prompts=None, **kwargs):
        seen.append(np.array(volume.array))
        return original(self, volume, prompts, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_volume", spy)
    return seen


def _channels(root, case_id, order=MODALITIES):
    return [root / case_id / f"{case_id}-{m}.nii.gz" for m in order]


def _stacked(files) -> np.ndarray:
    return np.stack([read_volume(f).array for f in files])


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("medsam-kit predict: error: ")
    return lines[0]


def test_dataset_root_segments_every_case_with_its_channels_stacked(brats_root, tmp_path, seen_volumes, capsys):
    root = tmp_path / "brats"
    shutil.copytree(brats_root, root)
    cases = sorted(p.name for p in root.iterdir())
    (root / cases[1] / f"{cases[1]}-seg.nii.gz").unlink()  # a test case without labels is segmented too
    out = tmp_path / "pred"
    assert main(["predict", "--model", "sam_vit_tiny_test", "--in-channels", "4", "--input", str(root),
                 "--dataset", "brats", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    for case_id, seen in zip(cases, seen_volumes, strict=True):
        reference = read_volume(_channels(root, case_id)[0])
        np.testing.assert_array_equal(seen, _stacked(_channels(root, case_id)))  # t1n, t1c, t2w, t2f
        labels = read_volume(out / f"{case_id}.nii.gz")
        assert labels.array.shape == reference.array.shape == (4, 96, 96) and labels.array.dtype == np.uint8
        assert labels.geometry.almost_equal(reference.geometry, atol=1e-5)
        sidecar = json.loads((out / f"{case_id}.json").read_text(encoding="utf-8"))
        assert sidecar["source"].split(", ") == [str(f) for f in _channels(root, case_id)]
    assert f"{cases[0]}: automatic" in capsys.readouterr().out


def test_dataset_root_skips_a_case_missing_a_modality_and_exits_1(brats_root, tmp_path, capsys):
    root = tmp_path / "brats"
    shutil.copytree(brats_root, root)
    good, bad = sorted(p.name for p in root.iterdir())
    (root / bad / f"{bad}-t2f.nii.gz").unlink()
    out = tmp_path / "pred"
    assert main(["predict", "--model", "sam_vit_tiny_test", "--in-channels", "4", "--input", str(root),
                 "--dataset", "brats", "--output", str(out)]) == 1
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{good}.nii.gz"]
    err = capsys.readouterr().err
    assert f"skipped {bad}: BraTS case {bad}: missing modality t2f" in err


def test_repeated_input_is_the_channels_of_one_volume(brats_root, tmp_path, seen_volumes):
    case_id = sorted(p.name for p in brats_root.iterdir())[0]
    t1n, t1c, t2w, t2f = _channels(brats_root, case_id)
    out = tmp_path / "pred"
    assert main(["predict", "--model", "sam_vit_tiny_test", "--in-channels", "4", "--input", str(t1n), str(t1c),
                 "--input", str(t2w), "--input", str(t2f), "--output", str(out)]) == 0
    assert [p.name for p in out.glob("*.nii.gz")] == [f"{case_id}.nii.gz"]  # the files' common prefix
    np.testing.assert_array_equal(seen_volumes[0], _stacked([t1n, t1c, t2w, t2f]))
    labels = read_volume(out / f"{case_id}.nii.gz")
    assert labels.array.shape == (4, 96, 96)
    assert labels.geometry.almost_equal(read_volume(t1n).geometry, atol=1e-5)


def test_plan_gives_channel_order_and_makes_a_case_root_a_dataset_root(brats_root, tmp_path, plan_checkpoint,
                                                                       seen_volumes):
    order = ("t2f", "t1n", "t1c", "t2w")  # the plan's order, not the adapter's
    ckpt = plan_checkpoint(order)
    out = tmp_path / "pred"
    assert main(["predict", "--model", "sam_vit_tiny_test", "--checkpoint", str(ckpt), "--input", str(brats_root),
                 "--output", str(out)]) == 0  # no --dataset: the plan's dataset, as it has 4 channels
    cases = sorted(p.name for p in brats_root.iterdir())
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
    for case_id, seen in zip(cases, seen_volumes, strict=True):
        np.testing.assert_array_equal(seen, _stacked(_channels(brats_root, case_id, order)))
    sidecar = json.loads((out / f"{cases[0]}.json").read_text(encoding="utf-8"))
    assert sidecar["labels"] == {"0": "background", "1": "tumour"}


@pytest.mark.parametrize("case", ["two files for 4", "dataset for 3", "three files for the plan",
                                  "plan names differ"])
def test_channel_count_or_names_that_do_not_fit_the_model_fail_in_one_line(brats_root, tmp_path, plan_checkpoint,
                                                                          capsys, case):
    case_id = sorted(p.name for p in brats_root.iterdir())[0]
    files = [str(f) for f in _channels(brats_root, case_id)]
    out = tmp_path / "pred"
    if case == "two files for 4":
        argv, expected = ["--model", "sam_vit_tiny_test", "--in-channels", "4", "--input", *files[:2]], \
            "--input (2 files): 2 channel(s) but the model takes 4"
    elif case == "dataset for 3":
        argv, expected = ["--model", "sam_vit_tiny_test", "--input", str(brats_root), "--dataset", "brats"], \
            "4 channel(s) but the model takes 3; give 3 or load the model with --in-channels 4"
    elif case == "three files for the plan":
        argv, expected = ["--model", "sam_vit_tiny_test", "--checkpoint", str(plan_checkpoint(MODALITIES)),
                          "--input", *files[:3]], "3 channel(s) but the model's plan expects 4 ['t1n', 't1c'"
    else:
        argv, expected = ["--model", "sam_vit_tiny_test", "--checkpoint",
                          str(plan_checkpoint(("t1", "t1ce", "t2", "flair"))), "--input", str(brats_root),
                          "--dataset", "brats"], \
            "channels ['t1n', 't1c', 't2w', 't2f'] but the model's plan expects ['t1', 't1ce', 't2', 'flair']"
    assert main(["predict", *argv, "--output", str(out)]) == 2
    assert expected in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("change", ["shape", "origin"])
def test_channel_files_on_different_grids_fail_in_one_line(tmp_path, capsys, change):
    geometry = Geometry(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    first = tmp_path / "c-a.nii.gz"
    write_volume(first, Volume(np.ones((3, 20, 24), np.int16), geometry))
    second = tmp_path / "c-b.nii.gz"
    if change == "shape":
        write_volume(second, Volume(np.ones((3, 20, 25), np.int16), geometry))
        expected = f"--input {second}: grid (Z, Y, X) (3, 20, 25) differs from {first} (3, 20, 24)"
    else:
        write_volume(second, Volume(np.ones((3, 20, 24), np.int16), Geometry(spacing=(1.0, 1.0, 2.0),
                                                                              origin=(5.0, 0.0, 0.0))))
        expected = f"--input {second}: geometry differs from {first} (origin"
    assert main(["predict", "--model", "sam_vit_tiny_test", "--in-channels", "2", "--input", str(first), str(second),
                 "--output", str(tmp_path / "out")]) == 2
    assert expected in _one_line_error(capsys)


def test_dataset_needs_one_root_folder(brats_root, tmp_path, capsys):
    file = _channels(brats_root, sorted(p.name for p in brats_root.iterdir())[0])[0]
    assert main(["predict", "--model", "sam_vit_tiny_test", "--input", str(file), "--dataset", "brats",
                 "--output", str(tmp_path)]) == 2
    assert "is not a folder" in _one_line_error(capsys)
    assert main(["predict", "--model", "sam_vit_tiny_test", "--input", str(file), str(file), "--dataset", "brats",
                 "--output", str(tmp_path)]) == 2
    assert "takes one --input, the dataset root; got 2 paths" in _one_line_error(capsys)
    assert main(["predict", "--model", "sam_vit_tiny_test", "--input", str(brats_root), "--dataset", "nope",
                 "--output", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in _one_line_error(capsys)


def test_common_name_of_channel_files(tmp_path):
    def names(*files):
        return _common_name([tmp_path / f for f in files])

    assert names(*(f"BraTS-GLI-00001-000-{m}.nii.gz" for m in MODALITIES)) == "BraTS-GLI-00001-000"
    assert names(*(f"BraTS2021_00001_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair"))) == "BraTS2021_00001"
    assert names("case_0000.nii.gz", "case_0001.nii.gz") == "case"
    assert names("t1.nii.gz", "t2.nii.gz") == "t1"  # no shared name: the first file's
    assert names("a/image.nrrd", "b/image.nrrd") == "image"
