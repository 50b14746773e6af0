"""`medsam-kit train` front end: help, overrides, a short run from a raw folder, resume, errors."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import yaml

from medsam_kit.cli import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "acdc_supervised.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsam-kit")
    train.register(parser.add_subparsers(dest="verb"))
    return parser


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for words in ("--config", "--data", "--resume", "--device", "--steps", "checkpoints/best.pt", "prepared",
                  "--resume-with-changes", "config_changes.jsonl", "--set"):
        assert words in text


def test_overrides_tell_prepared_from_raw(tmp_path):
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "cases.json").write_text("{}", encoding="utf-8")
    args = _parser().parse_args(["train", "--config", "c.yaml", "--data", str(tmp_path / "prep"), "--steps", "5",
                                 "--device", "cpu"])
    assert train.config_overrides(args) == {"data.prepared": str(tmp_path / "prep"), "data.raw": None,
                                            "train.device": "cpu", "train.steps": 5}
    args = _parser().parse_args(["train", "--config", "c.yaml", "--data", str(tmp_path), "--dataset", "acdc"])
    assert train.config_overrides(args) == {"data.raw": str(tmp_path), "data.prepared": None, "data.dataset": "acdc"}


def test_set_overrides_any_key_as_yaml_and_refuses_unknown_keys(tmp_path, capsys):
    from medsam_kit.cli.main import main

    args = _parser().parse_args(["train", "--config", "c.yaml", "--set", "optim.lr=3e-4", "--set",
                                 "train.val_modes=[coarse, auto]", "--set", "method.coarse_batch_dice=true",
                                 "--steps", "4"])
    assert train.config_overrides(args) == {"optim.lr": 3e-4, "train.val_modes": ["coarse", "auto"],
                                            "method.coarse_batch_dice": True, "train.steps": 4}
    for bad, words in (("lr=1", "SECTION.KEY=VALUE"), ("train.val_modes=[coarse", "not valid YAML"),
                       ("train.nope=1", "unknown config key(s) train.nope")):
        assert main(["train", "--config", str(CONFIG), "--out", str(tmp_path / "run"), "--set", bad]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_train_from_raw_folder_then_resume(phantom_factory, tmp_path, capsys):
    raw = phantom_factory("acdc", cases=5)
    out = tmp_path / "run"
    base = ["train", "--config", str(CONFIG), "--data", str(raw), "--out", str(out), "--device", "cpu"]
    args = _parser().parse_args([*base, "--steps", "2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "trained steps 0..2 of acdc_supervised" in printed and "best val Dice" in printed
    assert (out / "prepared" / "cases.json").is_file() and (out / "checkpoints" / "best.pt").is_file()
    args = _parser().parse_args([*base, "--steps", "3", "--resume"])
    assert args.func(args) == 0
    assert "trained steps 2..3" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [0, 1, 2, 2, 3, 3]  # val at start; train 1, 2; val at end of first run; train 3; val
    args = _parser().parse_args(base)
    with pytest.raises(FileExistsError, match="--resume"):
        args.func(args)

    # a resume with another learning rate is refused (config.yaml kept) unless asked for, then recorded
    changed = tmp_path / "changed.yaml"
    changed_text = CONFIG.read_text(encoding="utf-8").replace("\noptim:\n  lr: 0.001\n", "\noptim:\n  lr: 0.0123\n")
    changed.write_text(changed_text, encoding="utf-8")
    assert "0.0123" in changed.read_text(encoding="utf-8")
    saved = (out / "config.yaml").read_bytes()
    old_lr = yaml.safe_load(saved)["optim"]["lr"]
    args = _parser().parse_args([*base[:2], str(changed), *base[3:], "--steps", "4", "--resume"])
    with pytest.raises(ValueError, match=rf"config.yaml: --resume with a changed config: optim.lr: {old_lr} -> "
                                         r"0.0123; .*--resume-with-changes"):
        args.func(args)
    assert (out / "config.yaml").read_bytes() == saved
    args = _parser().parse_args([*base[:2], str(changed), *base[3:], "--steps", "4", "--resume-with-changes"])
    assert args.func(args) == 0
    assert "trained steps 3..4" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "config_changes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["changes"] for r in records] == [{"train.steps": [2, 3]},
                                               {"train.steps": [3, 4], "optim.lr": [old_lr, 0.0123]}]
    assert yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["optim"]["lr"] == 0.0123


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    shutil.copy(CONFIG, bad)
    bad.write_text(bad.read_text(encoding="utf-8").replace("batch_size:", "batchsize:"))
    args = _parser().parse_args(["train", "--config", str(bad), "--out", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key\(s\) train.batchsize"):
        args.func(args)


@pytest.mark.parametrize("name", ["acdc", "bhsd", "brats", "em"])
def test_shipped_configs_load(name):
    from medsam_kit.engine.config import load_config

    config = load_config(CONFIG.parent / f"{name}_supervised.yaml")
    assert config.data.dataset == name and config.model.name == "sam2.1_hiera_tiny_test"
