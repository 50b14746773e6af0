"""SSS through the Trainer on ACDC phantoms (1 labeled patient, 1 unlabeled): logs, exact resume, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medsam_kit.data.cache import prepare
from medsam_kit.engine.config import config_from_dict
from medsam_kit.engine.trainer import Trainer
from medsam_kit.models import load_model, read_checkpoint


@pytest.fixture(scope="module")
def prepared(phantom_factory, tmp_path_factory):
    """5 phantom patients, ACDC protocol with a budget of 1 labeled patient: 1 labeled, 1 unlabeled, 1 val."""
    out = tmp_path_factory.mktemp("acdc_sss_prepared")
    prepare("acdc", phantom_factory("acdc", cases=5), out, split_protocol="acdc", labeled_budget=1)
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert len(split["train_labeled"]) == 2 and len(split["train_unlabeled"]) == 2  # ED + ES frames of 1 patient
    return out


def _config(prepared, steps=6, image_size=64, **method):
    return config_from_dict({
        "name": "sss_test",
        "model": {"image_size": image_size},
        "data": {"prepared": str(prepared)},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"steps": steps, "batch_size": 2, "unlabeled_batch_size": 2, "val_every": 0,
                  "checkpoint_every": 100, "device": "cpu", "val_batch_size": 16},
        "method": {"name": "sss", "threshold": 0.6, "pcsw_refresh": 4, **method},
    })


def test_sss_run_logs_resumes_exactly_and_saves_loadable_checkpoints(prepared, tmp_path):
    config = _config(prepared)
    full_trainer = Trainer(config, tmp_path / "full", tensorboard=False)
    full = full_trainer.fit()
    metrics_text = (tmp_path / "full" / "metrics.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in metrics_text.splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "sup_loss", "unsup_loss", "conf_ratio", "pcsw_prompts", "dfe_similarity"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(0.0 <= r["conf_ratio"] <= 1.0 for r in train)
    method = full_trainer.method
    assert method.pcsw.computed >= 2  # both unlabeled volumes labelled by the teacher (refreshed at step 4+)
    # the teacher is the EMA of the student: close to it, not equal
    name = "coarse_head.classifier.weight"
    student, teacher = full_trainer.model.state_dict()[name], method.teacher.model.state_dict()[name]
    assert not torch.equal(student, teacher) and torch.allclose(student, teacher, atol=0.05)

    first = Trainer(config, tmp_path / "split", tensorboard=False).fit(stop_at=3)
    second = Trainer(config, tmp_path / "split", tensorboard=False).fit(resume=True)
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(full.losses),
                               rtol=0, atol=1e-5)

    ckpt = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    state = ckpt.extra["trainer_state"]["method"]
    assert set(state) == {"teacher", "dfe", "pcsw"}
    assert len(ckpt.extra["trainer_state"]["optimizer"]["param_groups"]) == 2  # model + DFE
    # DFE and the teacher stay out of the model checkpoint: it loads for inference as any other
    model = load_model(None, tmp_path / "full" / "checkpoints" / "last.pt")
    assert model.num_classes == 3
    for key, value in full_trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_sss_without_dfe_trains(prepared, tmp_path):
    trainer = Trainer(_config(prepared, steps=2, dfe=False), tmp_path / "run", tensorboard=False)
    result = trainer.fit()
    assert trainer.method.dfe is None and len(trainer.optimizer.param_groups) == 1
    assert all(math.isfinite(v) for v in result.losses)


@pytest.mark.slow
def test_short_sss_run_improves_validation_dice(prepared, tmp_path):
    config = _config(prepared, steps=100, image_size=128)
    config.train.val_every = 50
    config.train.validate_at_start = True
    config.optim.lr = 3e-3
    result = Trainer(config, tmp_path / "run", tensorboard=False).fit()
    start, *_, end = result.validations
    assert end["val_dice"] > start["val_dice"] + 0.1


def test_validation_reports_how_many_pixels_pass_the_threshold_and_how_many_are_right(prepared, tmp_path):
    import numpy as np

    trainer = Trainer(_config(prepared, threshold=0.0), tmp_path / "run", tensorboard=False)
    trainer.setup()
    record = trainer.validate()
    # threshold 0 keeps every pixel, so precision is the coarse head's pixel accuracy on the val cases
    right = total = 0
    for case in trainer.val_cases:
        pred, label = trainer.predict_case(case.image), np.asarray(case.label)
        right, total = right + int((pred == label).sum()), total + label.size
    assert record["val_pseudo_coverage"] == pytest.approx(1.0)
    assert record["val_pseudo_precision"] == pytest.approx(right / total)

    sure = Trainer(_config(prepared, threshold=0.6), tmp_path / "run06", tensorboard=False)
    sure.setup()
    assert 0.0 <= sure.validate()["val_pseudo_coverage"] < 1.0  # an untrained model is not 60 % sure everywhere
    config = _config(prepared)
    config.method = {"name": "supervised"}
    supervised = Trainer(config, tmp_path / "sup", tensorboard=False)
    supervised.setup()
    assert "val_pseudo_coverage" not in supervised.validate()  # no threshold, nothing to report
