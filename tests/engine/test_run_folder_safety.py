"""A run folder survives what happens to real runs: kill -9 while appending metrics or saving a
checkpoint, and a resume with a config that is no longer the run's."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import yaml

from medsam_kit.engine.config import config_from_dict, load_config
from medsam_kit.engine.run import RunLog, remove_stale_temp_files
from medsam_kit.engine.trainer import Trainer
from medsam_kit.io import atomic_path


def _config(prepared, **train):
    return config_from_dict({
        "name": "t",
        "data": {"prepared": str(prepared)},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"steps": 4, "batch_size": 2, "val_every": 0, "checkpoint_every": 100, "device": "cpu", **train},
    })


@pytest.fixture(scope="module")
def interrupted(prepared, tmp_path_factory):
    """A run of 4 steps stopped after step 2 (copy it before use)."""
    run = tmp_path_factory.mktemp("interrupted") / "run"
    Trainer(_config(prepared), run, tensorboard=False).fit(stop_at=2)
    return run


@pytest.fixture
def run(interrupted, tmp_path):
    return shutil.copytree(interrupted, tmp_path / "run")


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ 2: metrics.jsonl with a torn tail
@pytest.mark.parametrize("tail", ['{"kind": "train", "step": 3, "lo', "\0\0\0\0"], ids=["half-line", "nul-bytes"])
def test_torn_last_metrics_line_is_dropped_with_a_warning_naming_the_file(tmp_path, caplog, tail):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 1.0}\n{"kind": "train", "step": 2, "loss": 0.9}\n' + tail,
                    encoding="utf-8")
    log = RunLog(tmp_path, tensorboard=False)
    with caplog.at_level(logging.WARNING):
        log.restart(2)
    assert [r["step"] for r in log.records] == [1, 2]
    assert [r["step"] for r in _records(path)] == [1, 2]  # rewritten without the torn line
    assert str(path) in caplog.text and "incomplete last line" in caplog.text


@pytest.mark.parametrize("lines, where", [
    (['{"kind": "train", "step": 1}', "{not json", '{"kind": "train", "step": 2}'], "line 2 is not valid JSON"),
    (['{"kind": "train", "step": 1}', "[1, 2]", '{"kind": "train", "step": 2}'], "line 2 is not a JSON object"),
    (['{"kind": "train", "step": "one"}', '{"kind": "train", "step": 2}'], "line 1 is not a metrics record"),
    (['{"kind": "train", "step": 1}', '{"kind": "train", "step": 2'], "line 2 is not valid JSON"),  # ends in \n
], ids=["bad-json", "not-object", "bad-step", "complete-but-broken-last-line"])
def test_other_metrics_corruption_names_the_file_and_line(tmp_path, lines, where):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"{path}: {where}") as info:
        RunLog(tmp_path, tensorboard=False).restart(5)
    assert "\n" not in str(info.value) and "start a new run" in str(info.value)
    assert path.read_bytes() == before  # left as it was, for the user to look at


def test_resume_after_a_torn_metrics_line(run, prepared):
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "train", "step": 3, "loss": 0.')  # killed while appending step 3
    result = Trainer(_config(prepared), run, tensorboard=False).fit(resume=True)
    assert result.start_step == 2 and result.step == 4
    assert [r["step"] for r in _records(run / "metrics.jsonl")] == [1, 2, 3, 4]


# ------------------------------------------------------------------ 4: temporary files of interrupted saves
def test_temp_pattern_matches_what_the_atomic_writer_creates(tmp_path):
    names = []
    for name in ("last.pt", "metrics.jsonl", "case.nii.gz", "noext"):
        with atomic_path(tmp_path / "written" / name) as tmp:
            names.append(tmp.name)  # what a kill -9 at this point leaves behind
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in names:
        (crashed / name).write_bytes(b"half")
    assert sorted(p.name for p in remove_stale_temp_files(crashed)) == sorted(names)
    assert list(crashed.iterdir()) == []


def test_only_temp_files_are_removed(tmp_path):
    keep = ["last.pt", "best.pt", ".hidden", "notes.tmp", "last.abcd1234.tmp.pt", ".last.pt", ".last.abc.tmp.pt"]
    stale = [".last.abcd1234.tmp.pt", ".best.k_9zq0aa.tmp.pt", ".metrics.00000000.tmp.jsonl"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".dir.abcd1234.tmp.pt").mkdir()  # folders are not the checkpoint writer's
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".dir.abcd1234.tmp.pt"])
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_resume_removes_temp_files_of_a_killed_checkpoint_save(run, prepared, caplog):
    stale = [run / "checkpoints" / ".last.q1w2e3r4.tmp.pt", run / "checkpoints" / ".best.a1s2d3f4.tmp.pt",
             run / ".metrics.z9x8c7v6.tmp.jsonl"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    with caplog.at_level(logging.WARNING):
        Trainer(_config(prepared), run, tensorboard=False).fit(resume=True)
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    assert "removed 2 temporary file(s)" in caplog.text and str(run / "checkpoints") in caplog.text


# ------------------------------------------------------------------ 3: --resume with a changed config
def test_resume_with_a_changed_config_is_refused_and_config_yaml_kept(run, prepared):
    before = (run / "config.yaml").read_bytes()
    changed = _config(prepared, seed=3)
    changed.optim.lr = 0.01
    with pytest.raises(ValueError) as info:
        Trainer(changed, run, tensorboard=False).fit(resume=True)
    message = str(info.value)
    assert "\n" not in message and str(run / "config.yaml") in message
    assert "optim.lr: 0.001 -> 0.01" in message and "train.seed: 0 -> 3" in message
    assert "--resume-with-changes" in message and "new run" in message
    assert (run / "config.yaml").read_bytes() == before
    assert not (run / "config_changes.jsonl").exists()
    assert _records(run / "metrics.jsonl")[-1]["step"] == 2  # nothing trained


def test_resume_with_changes_records_them(run, prepared):
    changed = _config(prepared)
    changed.optim.lr = 0.01
    result = Trainer(changed, run, tensorboard=False).fit(resume=True, accept_changes=True)
    assert result.start_step == 2 and result.step == 4
    assert load_config(run / "config.yaml") == changed
    (record,) = _records(run / "config_changes.jsonl")
    assert record["step"] == 2 and record["changes"] == {"optim.lr": [0.001, 0.01]}
    assert record["accepted"] == "--resume-with-changes" and record["time"]
    # resuming again with the now-current config is no change at all
    Trainer(changed, run, tensorboard=False).fit(resume=True)
    assert len(_records(run / "config_changes.jsonl")) == 1


def test_length_device_and_bookkeeping_may_change_on_resume(run, prepared):
    longer = _config(prepared, steps=5, checkpoint_every=50, val_batch_size=4, device="cpu")
    longer.data.num_workers = 0
    result = Trainer(longer, run, tensorboard=False).fit(resume=True)
    assert result.start_step == 2 and result.step == 5
    (record,) = _records(run / "config_changes.jsonl")
    assert record["changes"] == {"train.steps": [4, 5], "train.checkpoint_every": [100, 50],
                                 "train.val_batch_size": [8, 4]}
    assert record["accepted"] == "resumable keys"
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["train"]["steps"] == 5


def test_same_data_under_another_spelling_is_no_change(run, prepared, monkeypatch):
    monkeypatch.chdir(prepared.parent)
    relative = _config(prepared)
    relative.data.prepared = f"./{prepared.name}/"
    Trainer(relative, run, tensorboard=False).fit(resume=True)
    assert not (run / "config_changes.jsonl").exists()


def test_a_run_from_before_validation_modes_resumes_and_chooses_best_anew(prepared, tmp_path):
    """config.yaml without train.val_modes / select_on (an older version): resumable, the change is recorded,
    and best.pt is chosen on the new score from the resumed step (the stored best was a coarse-head Dice)."""
    import json

    import yaml

    config = _config(prepared, steps=4, val_every=2)
    run = tmp_path / "run"
    Trainer(config, run).fit(stop_at=2)
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    del saved["train"]["val_modes"], saved["train"]["select_on"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    last = run / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    del payload["extra"]["trainer_state"]["select_on"]  # what that version's trainer state held
    torch.save(payload, last)
    result = Trainer(config, run).fit(resume=True)
    changes = [json.loads(line) for line in (run / "config_changes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert changes[-1]["changes"]["train.select_on"] == ["coarse", "auto"]
    assert result.best_step == 4  # the resumed run's first validation on the new score
