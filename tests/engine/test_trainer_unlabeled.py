"""Trainer <-> method hooks: the unlabeled stream, setup / after_step, method parameters, exact resume.

:class:`RecordingMethod` (also used by ``test_ddp.py``) is a small semi-supervised method: coarse
Dice + CE on the labeled batch plus ``scale * entropy`` of the coarse head on the unlabeled batch,
where ``scale`` is a trainable parameter the method owns. It records what the trainer hands it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from medsam_kit.data.cache import prepare
from medsam_kit.engine.config import config_from_dict
from medsam_kit.engine.intensity import to_unit
from medsam_kit.engine.losses import CoarseLoss
from medsam_kit.engine.trainer import Trainer
from medsam_kit.methods import TrainContext, TrainingMethod


class RecordingMethod(TrainingMethod):
    """Labeled coarse loss + ``scale`` x unlabeled coarse-head entropy; records batches and hook calls.

    Both terms are means over samples of equal size, so the loss of a global batch is the mean of the
    losses of equal shares of it: a 2-process run must reproduce a 1-process run (test_ddp.py).
    """

    name = "recorder"
    needs_unlabeled = True

    def __init__(self, unlabeled_weight: float = 0.5, record_path: str | None = None) -> None:
        self.unlabeled_weight = unlabeled_weight
        self.record_path = record_path
        self.calls: list[tuple] = []
        self.batches: list[dict] = []
        self.after_steps = 0  # stateful, like an EMA teacher: must survive a resume
        self.scale: torch.nn.Parameter | None = None
        self.setup_info: dict = {}
        self.first_grads: torch.Tensor | None = None
        self.coarse_loss = CoarseLoss()

    def setup(self, context: TrainContext) -> None:
        self.calls.append(("setup",))
        self.setup_info = {
            "model_built": context.model is not None,
            "device": str(context.device),
            "unlabeled_ids": list(context.unlabeled_cases.case_ids),
            "train_ids": list(context.train_cases.case_ids),
            "rank": context.rank,
            "world_size": context.world_size,
            "amp": context.amp,
            "intensity": dict(context.intensity),
        }
        self.scale = torch.nn.Parameter(torch.ones((), device=context.device))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.scale]

    def loss(self, model, batch: dict, step: int):
        self.calls.append(("loss", step))
        unlabeled = batch["unlabeled"]
        self.batches.append({
            "step": step,
            "image": batch["image"].detach().cpu().clone(),
            "label": batch["label"].cpu().clone(),
            "u_image": unlabeled["image"].detach().cpu().clone(),
            "u_device": str(unlabeled["image"].device),
            "u_case_id": list(unlabeled["case_id"]),
            "u_origin": unlabeled["patch_origin"].clone(),
        })
        sup = self.coarse_loss(model.coarse_logits(model.encode(batch["image"])), batch["label"])
        probs = model.coarse_logits(model.encode(unlabeled["image"])).float().softmax(1)
        entropy = -(probs * probs.clamp_min(1e-8).log()).sum(1).mean()
        unsup = self.scale * entropy
        total = sup + self.unlabeled_weight * unsup
        return total, {"loss": float(total.detach()), "sup_loss": float(sup.detach()),
                       "unsup_loss": float(unsup.detach())}

    def after_step(self, model, step: int) -> None:
        self.calls.append(("after_step", step))
        self.after_steps += 1
        if self.first_grads is None:  # the averaged (and clipped) gradients the optimizer used
            self.first_grads = torch.cat([p.grad.detach().reshape(-1).cpu() for p in model.parameters()
                                          if p.grad is not None] + [self.scale.grad.detach().reshape(1).cpu()])
        if self.record_path:
            torch.save(self.record(model), self.record_path)

    def record(self, model) -> dict:
        weights = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
        return {"calls": self.calls, "batches": self.batches, "setup_info": self.setup_info,
                "after_steps": self.after_steps, "scale": float(self.scale.detach()),
                "first_grads": self.first_grads, "weights": weights}

    def state_dict(self) -> dict:
        return {"after_steps": self.after_steps, "scale": self.scale.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.after_steps = state["after_steps"]
        with torch.no_grad():
            self.scale.copy_(state["scale"])


@pytest.fixture(scope="module")
def prepared_ssl(phantom_factory, tmp_path_factory):
    """5 phantom patients, labeled budget 1: train_labeled 2 frames (1 patient), train_unlabeled 2, val 2."""
    out = tmp_path_factory.mktemp("acdc_prepared_ssl")
    prepare("acdc", phantom_factory("acdc", cases=5), out, labeled_budget=1)
    return out


def ssl_config(prepared, **train):
    return config_from_dict({
        "name": "ssl",
        "data": {"prepared": str(prepared)},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"steps": 4, "batch_size": 2, "unlabeled_batch_size": 3, "val_every": 0, "checkpoint_every": 100,
                  "device": "cpu", **train},
    })


def _expected_crop(case, origin, size: int, intensity) -> np.ndarray:
    """``to_unit`` of the (C, S, S) crop at ``origin`` (z, y, x), zero-padded outside the slice as the sampler."""
    z, y, x = (int(v) for v in origin)
    plane = np.asarray(case.image[:, z])
    pad = size
    padded = np.pad(plane, ((0, 0), (pad, pad), (pad, pad)))
    crop = padded[:, y + pad : y + pad + size, x + pad : x + pad + size]
    return to_unit(crop.astype(np.float32), intensity)


def test_unlabeled_stream_hooks_and_method_parameters(prepared_ssl, tmp_path):
    method = RecordingMethod()
    config = ssl_config(prepared_ssl, steps=2, grad_accumulation=2)
    trainer = Trainer(config, tmp_path / "run", method=method, tensorboard=False)
    result = trainer.fit()
    split = json.loads((prepared_ssl / "split.json").read_text(encoding="utf-8"))
    assert split["train_unlabeled"] and set(split["train_unlabeled"]).isdisjoint(split["train_labeled"])

    # setup(context) once, before the optimizer (its parameter is in the optimizer: below), with the data and model
    info = method.setup_info
    assert info["model_built"]
    assert info["unlabeled_ids"] == split["train_unlabeled"] == trainer.unlabeled_cases.case_ids
    assert info["train_ids"] == split["train_labeled"]
    assert (info["rank"], info["world_size"], info["device"], info["amp"]) == (0, 1, "cpu", False)
    # hooks in order: 2 micro-batches per step, after_step(step) after each optimizer step
    assert method.calls == [("setup",), ("loss", 0), ("loss", 1), ("after_step", 1), ("loss", 2), ("loss", 3),
                            ("after_step", 2)]

    size = trainer.model.image_size
    for rec in method.batches:
        assert rec["image"].shape == (2, 1, size, size) and rec["label"].shape == (2, size, size)
        u = rec["u_image"]
        assert u.shape == (3, 1, size, size) and u.dtype == torch.float32 and rec["u_device"] == "cpu"
        assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0 and float(u.std()) > 0.05
        assert set(rec["u_case_id"]) <= set(split["train_unlabeled"])
        assert rec["u_origin"].shape == (3, 3) and rec["u_origin"].dtype == torch.int64
        # not augmented: each unlabeled image is exactly the crop at patch_origin of its prepared case
        for image, case_id, origin in zip(u, rec["u_case_id"], rec["u_origin"], strict=True):
            expected = _expected_crop(trainer.unlabeled_cases.case(case_id), origin, size, trainer.intensity)
            np.testing.assert_allclose(image.numpy(), expected, rtol=0, atol=1e-6)
    seen = {c for rec in method.batches for c in rec["u_case_id"]}
    assert seen == set(split["train_unlabeled"])  # 12 draws from 2 cases reach both

    # the method's own parameter is optimised (second param group) and checkpointed through its state
    assert len(trainer.optimizer.param_groups) == 2 and trainer.optimizer.param_groups[1]["params"] == [method.scale]
    assert method.scale.item() < 1.0  # d loss / d scale = entropy > 0: the step lowers it
    assert method.after_steps == 2 and result.step == 2
    assert trainer.params[-1] is method.scale  # clipped (and averaged across ranks) with the model's


def test_resume_with_unlabeled_stream_is_exact(prepared_ssl, tmp_path):
    config = ssl_config(prepared_ssl, steps=3, unlabeled_batch_size=2)
    full_method = RecordingMethod()
    full = Trainer(config, tmp_path / "full", method=full_method, tensorboard=False).fit()
    first = Trainer(config, tmp_path / "split", method=RecordingMethod(), tensorboard=False).fit(stop_at=1)
    resumed_method = RecordingMethod()
    second = Trainer(config, tmp_path / "split", method=resumed_method, tensorboard=False).fit(resume=True)
    assert second.start_step == 1 and resumed_method.after_steps == 3  # method state restored (1) + 2 steps
    torch.testing.assert_close(torch.tensor(first.losses + second.losses), torch.tensor(full.losses),
                               rtol=0, atol=1e-6)
    # the resumed run reads exactly the unlabeled batches (and labeled ones) of the uninterrupted run
    for a, b in zip(resumed_method.batches, full_method.batches[1:], strict=True):
        assert a["step"] == b["step"] and a["u_case_id"] == b["u_case_id"]
        assert torch.equal(a["u_origin"], b["u_origin"]) and torch.equal(a["u_image"], b["u_image"])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert resumed_method.scale.item() == pytest.approx(full_method.scale.item(), abs=1e-6)


def test_method_needing_unlabeled_cases_without_any_is_a_clear_error(prepared_ssl, tmp_path):
    folder = tmp_path / "prepared"
    shutil.copytree(prepared_ssl, folder)
    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    split["unused"] += split.pop("train_unlabeled")
    split["train_unlabeled"] = []
    (folder / "split.json").write_text(json.dumps(split), encoding="utf-8")
    with pytest.raises(ValueError, match=r"needs unlabeled training cases.*train_unlabeled is empty.*--labeled-budget"):
        Trainer(ssl_config(folder), tmp_path / "run", method=RecordingMethod(), tensorboard=False).fit()


def test_unlabeled_batch_size_config():
    assert config_from_dict({}).train.unlabeled_batch_size is None
    with pytest.raises(ValueError, match="unlabeled_batch_size must be >= 1"):
        config_from_dict({"train": {"unlabeled_batch_size": 0}})
