"""The method contract: a minimal custom method trains through the Trainer; the registry refuses non-methods."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from medsam_kit import methods
from medsam_kit.data.cache import prepare
from medsam_kit.engine.config import config_from_dict
from medsam_kit.engine.losses import CoarseLoss
from medsam_kit.engine.trainer import Trainer
from medsam_kit.methods import SupervisedParams, TrainContext, TrainingMethod, get_method, register_method


@dataclass
class CoarseOnlyParams:
    """Keys of ``method: {name: coarse_only, ...}``."""

    weight: float = 1.0


class CoarseOnlyMethod(TrainingMethod):
    """The coarse head's Dice + CE alone; records the context it was set up with."""

    name = "coarse_only"

    def __init__(self, params: CoarseOnlyParams | None = None) -> None:
        self.params = params or CoarseOnlyParams()
        self.coarse_loss = CoarseLoss()
        self.context: TrainContext | None = None

    def setup(self, context: TrainContext) -> None:
        self.context = context

    def loss(self, model, batch: dict, step: int):
        loss = self.params.weight * self.coarse_loss(model.coarse_logits(model.encode(batch["image"])), batch["label"])
        return loss, {"loss": float(loss.detach())}


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, restored after the test."""
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    return methods.METHODS


def test_custom_method_trains_through_the_trainer(registry, phantom_factory, tmp_path):
    prepared = tmp_path / "prepared"
    prepare("acdc", phantom_factory("acdc", cases=5), prepared)
    register_method("coarse_only", CoarseOnlyParams, CoarseOnlyMethod)
    config = config_from_dict({
        "name": "contract", "data": {"prepared": str(prepared)}, "model": {"image_size": 64},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "train": {"steps": 3, "batch_size": 2, "val_every": 0, "checkpoint_every": 100, "device": "cpu"},
        "method": {"name": "coarse_only", "weight": 0.5},
    })
    trainer = Trainer(config, tmp_path / "run", tensorboard=False)
    result = trainer.fit()
    method = trainer.method
    assert isinstance(method, CoarseOnlyMethod) and method.params.weight == 0.5
    assert result.step == 3 and len(result.losses) == 3 and all(math.isfinite(v) for v in result.losses)
    context = method.context
    assert context.model is trainer.model and (context.rank, context.world_size) == (0, 1)
    assert (context.steps, context.grad_accumulation, context.num_classes) == (3, 1, 3)
    assert len(trainer.optimizer.param_groups) == 1  # no parameters of its own (the default)


def test_registry_refuses_what_is_not_a_training_method(registry):
    class NotAMethod:
        def loss(self, model, batch, step): ...

    with pytest.raises(ValueError, match="not a subclass of medsam_kit.methods.TrainingMethod"):
        register_method("duck", SupervisedParams, NotAMethod)
    with pytest.raises(ValueError, match="must be a dataclass"):
        register_method("coarse_only", dict, CoarseOnlyMethod)
    with pytest.raises(ValueError, match="registered already"):
        register_method("supervised", CoarseOnlyParams, CoarseOnlyMethod)
    registry["duck"] = (SupervisedParams, NotAMethod)  # written into the dict directly: refused when used
    with pytest.raises(ValueError, match="not a subclass"):
        get_method("duck")
    with pytest.raises(TypeError, match="TrainingMethod"):
        Trainer(config_from_dict({}), "unused", method=NotAMethod())
