"""Trainer on ACDC phantoms: learning, bit-exact resume, run folder contents, reload from the folder."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medsam_kit.engine.config import config_from_dict, load_config
from medsam_kit.engine.run import load_run
from medsam_kit.engine.trainer import Trainer, freeze_parts
from medsam_kit.models import read_checkpoint


def _config(prepared, **train):
    return config_from_dict({
        "name": "t",
        "data": {"prepared": str(prepared)},
        "optim": {"lr": 1e-3, "warmup_steps": 5},
        "train": {"steps": 6, "batch_size": 4, "val_every": 0, "checkpoint_every": 100, "device": "cpu", **train},
    })


def test_short_run_improves_validation_dice(prepared, tmp_path):
    config = _config(prepared, steps=100, val_every=50, validate_at_start=True)
    config.optim.lr = 3e-3
    result = Trainer(config, tmp_path / "run").fit()
    start, *_, end = result.validations
    assert start["step"] == 0 and end["step"] == 100
    # Untrained coarse head: ~0.03 mean Dice on the held-out patient; measured 0.27 after 100 steps
    # (batch 4, lr 3e-3; ~0.6 after 250 steps of batch 8). Floor 0.15 and a gain of 0.1 leave margin.
    assert end["val_dice"] > 0.15 and end["val_dice"] > start["val_dice"] + 0.1
    assert set(end["val_dice_per_class"]) == {"RV", "MYO", "LV"}
    assert result.losses[-1] < result.losses[0]
    assert result.best_val_dice == max(v["val_dice"] for v in result.validations[1:])
    # TensorBoard scalars (tensorboard is a declared dependency): losses and validation Dice are logged
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert any("loss" in t for t in tags) and any("dice" in t.lower() for t in tags), tags


def test_resume_gives_identical_losses_and_run_folder(prepared, tmp_path):
    config = _config(prepared, val_every=3)
    full = Trainer(config, tmp_path / "full").fit()
    first = Trainer(config, tmp_path / "split").fit(stop_at=3)
    assert first.step == 3
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config, tmp_path / "split").fit()
    second = Trainer(config, tmp_path / "split").fit(resume=True)
    assert second.start_step == 3 and second.step == 6
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(full.losses),
                               rtol=0, atol=1e-6)
    # Equal weights up to float noise; a pixel may flip where two class logits tie to ~1e-7.
    assert [v["val_dice"] for v in second.validations] == pytest.approx(
        [v["val_dice"] for v in full.validations[1:]], rel=1e-3)

    run = tmp_path / "split"
    for name in ("config.yaml", "fingerprint.json", "plan.json", "split.json", "metrics.jsonl", "progress.png",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == config
    assert (json.loads((run / "split.json").read_text(encoding="utf-8"))
            == json.loads((prepared / "split.json").read_text(encoding="utf-8")))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["kind"] == "val"] == [3, 6]
    assert (run / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = read_checkpoint(run / "checkpoints/last.pt")
    assert last.extra["trainer_state"]["step"] == 6
    assert last.extra["dataset"] == "acdc" and len(last.extra["channel_names"]) == 1
    assert last.extra["label_names"] == {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    assert last.extra["intensity_to_unit"]["kind"] == "zscore_clip"
    assert last.extra["plan"] == json.loads((prepared / "plan.json").read_text(encoding="utf-8"))


def test_load_run_reloads_bit_equal_weights(prepared, tmp_path):
    trainer = Trainer(_config(prepared, steps=3, val_every=3), tmp_path / "run")
    trainer.fit()
    best = read_checkpoint(tmp_path / "run/checkpoints/best.pt")
    model, extra = load_run(tmp_path / "run", which="last")
    trained = trainer.model.state_dict()
    assert model.state_dict().keys() == trained.keys()
    assert all(torch.equal(model.state_dict()[k], trained[k].cpu()) for k in trained)
    assert "trainer_state" not in extra and extra["step"] == 3
    model_best, extra_best = load_run(tmp_path / "run")  # best.pt by default
    assert extra_best["val_dice"] == pytest.approx(best.extra["val_dice"])
    assert all(torch.equal(model_best.state_dict()[k], best.state_dict[k]) for k in best.state_dict)
    with pytest.raises(FileNotFoundError, match="no best.pt or last.pt"):
        load_run(tmp_path)


def test_freeze_encoder_and_raw_data(phantom_factory, tmp_path):
    raw = phantom_factory("acdc", cases=5)
    config = config_from_dict({
        "data": {"raw": str(raw), "dataset": "acdc"},
        "train": {"steps": 2, "batch_size": 2, "val_every": 0, "device": "cpu"},
        "trainable": {"freeze": ["image_encoder", r"coarse_head\.stem\."]},
    })
    trainer = Trainer(config, tmp_path / "run")
    trainer.setup()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    encoder = [n for n in before if n.startswith("sam.image_encoder.")]
    assert encoder and all(torch.equal(before[n], after[n]) for n in encoder)
    stem = [n for n in before if n.startswith("coarse_head.stem.")]
    assert stem and all(torch.equal(before[n], after[n]) for n in stem)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("sam.sam_mask_decoder."))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("coarse_head.classifier."))
    assert (tmp_path / "run/prepared/cases.json").is_file()
    with pytest.raises(ValueError, match="matches no model part"):
        freeze_parts(trainer.model, ["encoder_typo"])


def test_resume_without_checkpoint_is_an_error(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(_config(prepared), tmp_path / "empty").fit(resume=True)


def test_config_yaml_is_plain(prepared, tmp_path):
    Trainer(_config(prepared, steps=1), tmp_path / "run").fit()
    data = yaml.safe_load((tmp_path / "run/config.yaml").read_text(encoding="utf-8"))
    assert data["train"]["steps"] == 1 and data["method"]["name"] == "supervised"


def test_grad_accumulation_resumes_identically(prepared, tmp_path):
    config = _config(prepared, steps=4, batch_size=2, grad_accumulation=2)
    full = Trainer(config, tmp_path / "full").fit()
    Trainer(config, tmp_path / "split").fit(stop_at=2)
    second = Trainer(config, tmp_path / "split").fit(resume=True)
    assert len(full.losses) == 4
    torch.testing.assert_close(torch.tensor(second.losses), torch.tensor(full.losses[2:]), rtol=0, atol=1e-6)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from medsam_kit.engine.run import rng_state, set_rng_state

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_validation_scores_what_users_get_and_best_follows_select_on(prepared, tmp_path):
    """Every validation records the coarse head, the automatic pipeline and one-box prompts; best.pt follows
    train.select_on; the automatic score is the Dice of the Segmenter predict --run builds."""
    import numpy as np

    from medsam_kit.engine.intensity import to_unit
    from medsam_kit.engine.metrics import dice_iou
    from medsam_kit.engine.pipeline_validation import pipeline_segmenter

    config = _config(prepared, steps=40, val_every=20)
    config.optim.lr = 3e-3
    trainer = Trainer(config, tmp_path / "run")
    result = trainer.fit()
    for record in result.validations:
        assert set(record["val_modes"]) == {"coarse", "auto", "prompted"} and record["val_select_on"] == "auto"
        assert record["val_dice"] == record["val_modes"]["auto"]["mean"]
        assert all(0.0 <= mode["mean"] <= 1.0 for mode in record["val_modes"].values())
    assert result.best_val_dice == max(r["val_modes"]["auto"]["mean"] for r in result.validations)
    # the last record's automatic Dice, recomputed from the Segmenter of the trained weights
    segmenter = pipeline_segmenter(trainer.model, trainer.class_values, trainer.plan.label_names,
                                   lambda image: to_unit(image, trainer.intensity), "cpu", 8)
    scores = {v: [] for v in trainer.class_values}
    for case in trainer.val_cases:
        labels, truth = segmenter.segment_volume(np.asarray(case.image), geometry=case.geometry).labels, case.label
        for v in trainer.class_values:
            if (labels == v).any() or (truth == v).any():
                scores[v].append(dice_iou(labels == v, truth == v)[0])
    expected = np.mean([np.mean(s) for s in scores.values() if s])
    assert result.validations[-1]["val_modes"]["auto"]["mean"] == pytest.approx(expected, abs=1e-6)
    # selection on the coarse head instead, and a mode list without the pipeline
    coarse = _config(prepared, steps=4, val_every=2, val_modes=["coarse"], select_on="coarse")
    record = Trainer(coarse, tmp_path / "coarse").fit().validations[-1]
    assert set(record["val_modes"]) == {"coarse"} and record["val_dice"] == record["val_modes"]["coarse"]["mean"]
    with pytest.raises(ValueError, match="train.select_on must be one of train.val_modes"):
        _config(prepared, val_modes=["coarse"], select_on="auto")
