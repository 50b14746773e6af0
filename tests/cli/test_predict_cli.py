"""``medsam-kit predict``: NIfTI + sidecar with the input geometry, prompts, batch folders."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from medsam_kit.cli import predict
from medsam_kit.io import Geometry, Volume, read_volume, write_volume


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsam-kit")
    predict.register(parser.add_subparsers(dest="verb"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(["predict", *argv])
    return args.func(args)


def _oblique() -> Geometry:
    c, s = np.cos(0.4), np.sin(0.4)
    return Geometry(spacing=(0.9, 1.1, 4.0), origin=(10.0, -20.0, 33.0),
                    direction=((c, 0.0, s), (0.0, 1.0, 0.0), (-s, 0.0, c)))


@pytest.fixture
def volume_file(tmp_path):
    rng = np.random.default_rng(0)
    array = (rng.random((6, 40, 48)) * 200).astype(np.int16)
    path = tmp_path / "in" / "case_a.nii.gz"
    write_volume(path, Volume(array, _oblique()))
    return path


def test_predict_writes_nifti_and_sidecar_with_input_geometry(tmp_path, volume_file, capsys):
    out = tmp_path / "out" / "pred.nii.gz"
    assert _run(["--model", "sam_vit_tiny_test", "--input", str(volume_file), "--output", str(out),
                 "--overlay", "--probabilities"]) == 0
    labels = read_volume(out)
    source = read_volume(volume_file)
    assert labels.array.shape == source.array.shape and labels.array.dtype == np.uint8
    assert labels.geometry.almost_equal(source.geometry, atol=1e-5)
    sidecar = json.loads((tmp_path / "out" / "pred.json").read_text(encoding="utf-8"))
    assert sidecar["mode"] == "automatic" and sidecar["labels"]["0"] == "background"
    assert set(sidecar["present"]) <= {int(k) for k in sidecar["labels"]}
    assert Geometry.from_dict(sidecar["geometry"]).almost_equal(source.geometry, atol=1e-5)
    assert (tmp_path / "out" / "pred_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probs = sorted(p.name for p in (tmp_path / "out").glob("pred_prob_*.nii.gz"))
    assert probs == sorted(f"pred_prob_{n}.nii.gz" for k, n in sidecar["labels"].items() if k != "0")
    assert "case_a.nii.gz: automatic" in capsys.readouterr().out


def test_predict_with_prompt_file_and_batch_folder(tmp_path, volume_file):
    names = predict.make_segmenter(_parser().parse_args(
        ["predict", "--model", "sam_vit_tiny_test", "--input", "x", "--output", "y"])).label_names
    prompt = {"labels": {names[1]: {"2": {"boxes": [[5, 5, 30, 25]]}}}}
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "case_a.json").write_text(json.dumps(prompt), encoding="utf-8")
    second = volume_file.with_name("case_b.nii.gz")
    write_volume(second, Volume(np.ones((3, 20, 24), np.int16), Geometry(spacing=(2, 2, 2))))
    out = tmp_path / "batch"
    assert _run(["--model", "sam_vit_tiny_test", "--input", str(volume_file.parent), "--output", str(out),
                 "--prompts", str(tmp_path / "prompts")]) == 0
    assert json.loads((out / "case_a.json").read_text(encoding="utf-8"))["mode"] == "prompted"
    assert json.loads((out / "case_b.json").read_text(encoding="utf-8"))["mode"] == "automatic"
    assert read_volume(out / "case_b.nii.gz").geometry.almost_equal(Geometry(spacing=(2, 2, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="one file but --input holds several"):
        _run(["--model", "sam_vit_tiny_test", "--input", str(volume_file.parent), "--output", str(out),
              "--prompts", str(tmp_path / "prompts" / "case_a.json")])
    with pytest.raises(FileNotFoundError):
        _run(["--model", "sam_vit_tiny_test", "--input", str(tmp_path / "missing.nii.gz"), "--output", str(out)])


def test_predict_help_describes_every_option():
    parser = _parser()
    sub = parser._subparsers._group_actions[0].choices["predict"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, action.dest


def test_predict_from_medsam_kit_checkpoint_uses_its_plan_and_label_names(tmp_path, volume_file):
    import torch

    from medsam_kit.data.preprocess import ChannelNormalization, PreprocessingPlan
    from medsam_kit.models import load_model, save_checkpoint

    torch.manual_seed(0)
    model = load_model("sam_vit_tiny_test", in_channels=1, num_classes=2)
    plan = PreprocessingPlan("test", "CT", ("CT",), {0: "background", 1: "bleed", 2: "edema"},
                             (ChannelNormalization("ct_window", window=(0.0, 80.0)),), target_spacing_xy=(1.0, 1.0))
    ckpt = tmp_path / "model.pt"
    save_checkpoint(model, ckpt, extra={"plan": plan.to_dict(), "label_names": {1: "bleed", 2: "edema"}})
    out = tmp_path / "out"
    assert _run(["--model", "sam_vit_tiny_test", "--checkpoint", str(ckpt), "--input", str(volume_file),
                 "--output", str(out)]) == 0
    sidecar = json.loads((out / "case_a.json").read_text(encoding="utf-8"))
    assert sidecar["labels"] == {"0": "background", "1": "bleed", "2": "edema"}
    labels = read_volume(out / "case_a.nii.gz")
    assert labels.array.shape == (6, 40, 48) and set(np.unique(labels.array)) <= {0, 1, 2}
    assert labels.geometry.almost_equal(read_volume(volume_file).geometry, atol=1e-5)


def test_propagation_and_guide_options(tmp_path, volume_file):
    def segmenter(*extra):
        return predict.make_segmenter(_parser().parse_args(
            ["predict", "--model", "sam2.1_hiera_tiny_test", "--input", "x", "--output", "y", *extra]))

    assert segmenter().propagation.guide == "none"  # registry model: untrained coarse head
    assert segmenter().propagation.method == "box"  # random init: no trained memory either
    assert segmenter("--guide", "coarse").propagation.guide == "coarse"
    memory = segmenter("--propagation", "memory")
    assert memory.propagation.method == "memory"
    prompt = {"labels": {memory.label_names[1]: {"3": {"boxes": [[5, 5, 30, 25]]}}}}
    (tmp_path / "p.json").write_text(json.dumps(prompt), encoding="utf-8")
    out = tmp_path / "mem.nii.gz"
    assert _run(["--model", "sam2.1_hiera_tiny_test", "--propagation", "memory", "--input", str(volume_file),
                 "--output", str(out), "--prompts", str(tmp_path / "p.json")]) == 0
    assert read_volume(out).array.shape == read_volume(volume_file).array.shape
    with pytest.raises(ValueError, match="SAM-2"):
        _run(["--model", "sam_vit_tiny_test", "--propagation", "memory", "--input", str(volume_file),
              "--output", str(tmp_path / "x.nii.gz"), "--prompts", str(tmp_path / "p.json")])


def test_official_sam2_checkpoint_propagates_with_memory_by_default(tmp_path):
    import torch

    from medsam_kit.models import load_model

    path = tmp_path / "sam2_official.pt"
    torch.save({"model": load_model("sam2.1_hiera_tiny_test").sam.state_dict()}, path)  # Meta's file format
    args = _parser().parse_args(["predict", "--model", "sam2.1_hiera_tiny_test", "--checkpoint", str(path),
                                 "--input", "x", "--output", "y"])
    segmenter = predict.make_segmenter(args)
    assert segmenter.propagation.method == "memory" and segmenter.propagation.guide == "none"
    args.propagation = "box"
    assert predict.make_segmenter(args).propagation.method == "box"
