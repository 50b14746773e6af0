"""The training-method contract: :class:`TrainingMethod` (the hooks the Trainer calls) and :class:`TrainContext`.

A method is a strategy object: the :class:`~medsam_kit.engine.trainer.Trainer` owns the data, the
model, the optimizer, the loop, checkpoints and validation; the method computes the loss of a batch
and may keep its own modules and state (an EMA teacher, a feature-enhancement module). The Trainer
calls the hooks below and nothing else, in this order (``docs/methods.md``):

1. :meth:`TrainingMethod.setup` once, with a :class:`TrainContext`, after the model is built and
   before the optimizer (so the method may build trainable modules);
2. :meth:`TrainingMethod.parameters`: the method's own trainable parameters, optimised with the model's;
3. on resume, :meth:`TrainingMethod.load_state_dict` with what :meth:`TrainingMethod.state_dict` returned;
4. :meth:`TrainingMethod.loss` per micro-batch, :meth:`TrainingMethod.after_step` after each optimizer step;
5. :meth:`TrainingMethod.validation_observer` at each validation.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

from medsam_kit.engine.augment import SpatialAugment


@dataclass(frozen=True)
class TrainContext:
    """What a method may read at :meth:`TrainingMethod.setup` (the Trainer builds it; methods never see the Trainer).

    Attributes:
        model: the student :class:`~medsam_kit.models.SegmenterModel`, built, on ``device``, frozen parts
            frozen; the same object :meth:`TrainingMethod.loss` gets.
        device: this process's device (``cuda:LOCAL_RANK`` under torchrun).
        train_cases: the labeled training cases (split ``train_labeled``): iterable of cases with
            ``case_id``, ``image`` ``(C, Z, Y, X)`` (preprocessed, before ``to_unit``) and ``label`` (label values).
        unlabeled_cases: the unlabeled training cases (split ``train_unlabeled``; empty unless the split
            has some), with ``case_id`` / ``image`` and ``case(case_id)`` lookup. Validation cases are not
            here: a method never trains on them.
        class_values: label values of classes ``1..K`` (sorted; background 0 excluded).
        label_lut: ``(max label value + 1,)`` int64 lookup table, label value -> class index ``0..K``.
        intensity: the ``to_unit`` spec (:func:`medsam_kit.engine.intensity.to_unit`) the batches went through.
        augment: the labeled batches' augmentation (``params``: :class:`~medsam_kit.engine.augment.AugmentParams`,
            ``pad_value``: the image value outside a sample, ``intensity``: the labeled intensity changes).
        steps: ``train.steps`` (optimizer steps of the whole run).
        grad_accumulation: ``train.grad_accumulation`` (micro-batches per optimizer step).
        val_batch_size: ``train.val_batch_size`` (slices per forward pass outside training).
        amp: autocast is on (CUDA with ``train.amp``); ``amp_dtype`` its dtype.
        rank: this process's rank, ``0..world_size - 1`` (0 in a single process).
        world_size: processes in the job; each holds the contiguous share ``rank`` of every global
            micro-batch (:mod:`medsam_kit.engine.distributed`).
    """

    model: torch.nn.Module
    device: torch.device
    train_cases: Any
    unlabeled_cases: Any
    class_values: tuple[int, ...]
    label_lut: torch.Tensor
    intensity: dict
    augment: SpatialAugment
    steps: int
    grad_accumulation: int
    val_batch_size: int
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    rank: int = 0
    world_size: int = 1

    @property
    def num_classes(self) -> int:
        """``K``: foreground classes (the coarse head has ``K + 1`` channels)."""
        return len(self.class_values)

    def autocast(self):
        """The Trainer's autocast context for forward passes (a null context without AMP)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


class ValidationObserver(Protocol):
    """Sees the coarse head's logits on the validation cases; its :meth:`logs` join the validation record."""

    def add(self, logits: torch.Tensor, truth: torch.Tensor) -> None:
        """Logits ``(B, K + 1, H, W)`` of a chunk of validation slices and their true class indices ``(B, H, W)``."""

    def logs(self) -> dict[str, Any]:
        """Entries for the validation record (``metrics.jsonl``), e.g. ``{"val_pseudo_coverage": 0.8}``."""


class TrainingMethod(abc.ABC):
    """Base class of training methods: :meth:`loss` is required, every other hook has a do-nothing default.

    Register a subclass in :data:`medsam_kit.methods.METHODS` with its parameter dataclass
    (:func:`medsam_kit.methods.register_method`); the Trainer builds it as ``cls(params)``.

    Attributes:
        name: the registry name (used in messages).
        needs_unlabeled: the Trainer streams unlabeled batches (``batch["unlabeled"]``) and refuses a
            split without ``train_unlabeled`` cases.
    """

    name: ClassVar[str] = ""
    needs_unlabeled: ClassVar[bool] = False

    def setup(self, context: TrainContext) -> None:  # noqa: B027 - optional hook
        """Once, before the optimizer is built (and before :meth:`load_state_dict` on resume): build the
        method's modules on ``context.device``, read the data it needs. Default: nothing."""

    def parameters(self) -> Sequence[torch.nn.Parameter]:
        """The method's own trainable parameters (not the model's), optimised and clipped with the model's
        as a second parameter group and averaged across ranks. Default: none."""
        return []

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (under the Trainer's autocast; it calls ``backward``).

        Args:
            model: the student model (``context.model``).
            batch: ``image`` ``(B, C, S, S)`` float in ``[0, 1]``, augmented, and ``label`` ``(B, S, S)``
                int64 class indices ``0..K``, on the device; with ``needs_unlabeled`` also ``unlabeled``
                (``{"image", "case_id", "patch_origin"}``, not augmented; see the Trainer). Under torchrun:
                this rank's share of the global micro-batch.
            step: index of this micro-batch since the start of training (seed per-batch randomness with it,
                so a resumed run draws what an uninterrupted one does).

        Returns:
            ``(loss, logs)``: a scalar tensor, and floats for ``metrics.jsonl`` (``logs["loss"]`` required;
            every rank must log the same keys).
        """

    def after_step(self, model: torch.nn.Module, step: int) -> None:  # noqa: B027 - optional hook
        """After optimizer step ``step`` (1-based), on every rank, before validation and checkpointing
        (e.g. an EMA teacher update). Default: nothing."""

    def state_dict(self) -> dict:
        """What a resumed run needs (teacher / module weights as CPU tensors, counters), saved in ``last.pt``.
        Default: nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - optional hook
        """Restore :meth:`state_dict` after :meth:`setup` (``{}``: a fresh start). Default: nothing."""

    def validation_observer(self, num_classes: int) -> ValidationObserver | None:
        """A fresh :class:`ValidationObserver` for one validation (``num_classes``: coarse-head channels,
        background included), or None (default): the validation record holds the Dice scores only."""
        del num_classes
        return None
