"""The one training loop: any method (strategy object) on any prepared dataset, with resume.

``Trainer(config, run_dir).fit()`` prepares the data if needed, builds the model, trains for
``config.train.steps`` optimizer steps and leaves a complete run folder (:mod:`medsam_kit.engine.run`).

* Data: 2D slices from the split's ``train_labeled`` cases (:class:`~medsam_kit.data.samplers.SliceSampler`,
  S x S patches at the prepared spacing); sample ``i`` is seeded by ``(seed, 0, i)``, and micro-batch
  ``m`` takes samples ``m*B .. m*B+B-1``, so a resumed run reads exactly the batches it would have read.
* Labels are mapped to class indices ``0..K`` (label values may have gaps, e.g. BraTS 2021 ET = 4);
  images go through :func:`medsam_kit.engine.intensity.to_unit`.
* Each micro-batch is warped on the device (``augment`` section, :mod:`medsam_kit.engine.augment`),
  seeded by ``(seed, micro-batch index)``, so resuming stays exact.
* AdamW, linear warmup then cosine decay; gradient accumulation; gradient clipping; AMP on CUDA
  (bfloat16 when supported, else float16 with a gradient scaler).
* Validation: mean Dice per class on the split's ``val`` cases (never ``test``), slice by slice
  with the coarse head (automatic mode), windows of S x S (MONAI sliding window) at the prepared
  spacing as in training; ``best.pt`` follows the best mean Dice.
* Resume: ``last.pt`` holds model, optimizer, scheduler, scaler, method, step and RNG states; losses
  after a resume equal those of an uninterrupted run. The config must be the run's ``config.yaml``
  but for :data:`~medsam_kit.engine.config.RESUMABLE_KEYS` (e.g. ``train.steps``, ``train.device``)
  unless ``fit(accept_changes=True)``; changes are appended to ``config_changes.jsonl``. Every start
  removes the temporary files a killed checkpoint / metrics write left in the run folder.
* Unlabeled stream (methods with ``needs_unlabeled = True``): 2D slices of the split's
  ``train_unlabeled`` cases, sample ``i`` seeded by ``(seed + 1, 0, i)``, micro-batch ``m`` takes
  samples ``m*Bu .. m*Bu+Bu-1`` (``Bu = train.unlabeled_batch_size``, default ``train.batch_size``),
  so it resumes exactly too. It reaches the method as ``batch["unlabeled"]`` = ``{"image": (Bu, C, S, S)
  float in [0, 1] on the device (to_unit applied, not augmented), "case_id": list[str],
  "patch_origin": (Bu, 3) int64 (z, y, x) crop start in the prepared volume, on the CPU}``.
* Distributed (``torchrun --nproc_per_node N``, :mod:`medsam_kit.engine.distributed`): every global
  micro-batch (labeled and unlabeled alike) is split into N contiguous shares, rank ``r`` holding
  rows ``r*B/N ..``; gradients are averaged across ranks before clipping; logged losses are rank means;
  rank 0 alone writes files and validates. ``world_size == 1`` is the plain single-process loop.

Method hooks (:class:`~medsam_kit.methods.base.TrainingMethod`: ``loss`` is required, the rest have
defaults; ``docs/methods.md``), in the order the trainer calls them:

1. :meth:`Trainer.setup` loads the data and split, builds and freezes the model, sets ``amp``, then
   calls ``method.setup(context)`` with a :class:`~medsam_kit.methods.base.TrainContext` (model,
   device, labeled / unlabeled cases, label lookup table, intensity spec, augmentation, the train
   settings methods use, AMP, rank / world size); the method may build its own modules on the device.
2. Then the optimizer is built over the model's trainable parameters (group 0) plus
   ``method.parameters()`` (group 1, same LR schedule; none by default); both are clipped
   together and averaged across ranks. The method's ``state_dict`` must carry those modules' weights.
3. ``fit(resume=True)`` restores model, optimizer and ``method.load_state_dict`` after setup.
4. Per micro-batch ``method.loss(model, batch, micro)``; after each optimizer step (1-based
   ``step``) ``method.after_step(model, step)`` on every rank, before validation and checkpointing.
5. Each validation asks ``method.validation_observer(K + 1)`` for an observer of the coarse logits
   whose ``logs()`` join the validation record (None by default).

The library never prints: progress goes to ``callbacks`` (objects with any of ``on_start(trainer,
start_step, total_steps)``, ``on_step(step, logs)``, ``on_validation(step, result)``, ``on_end(result)``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from medsam_kit.data.cache import load_prepared, prepare
from medsam_kit.data.samplers import SliceSampler
from medsam_kit.engine.augment import SpatialAugment
from medsam_kit.engine.coarse import PseudoLabelCalibration, coarse_logit_chunks
from medsam_kit.engine.config import RESUMABLE_KEYS, ExperimentConfig, config_changes, format_changes, save_config
from medsam_kit.engine.distributed import (
    DistInfo,
    ShardSampler,
    average_gradients,
    average_logs,
    barrier,
    broadcast_object,
    broadcast_parameters,
    cleanup,
    init_distributed,
    shard,
)
from medsam_kit.engine.intensity import intensity_spec, to_unit, unit_pad_value
from medsam_kit.engine.pipeline_validation import DiceTally, pipeline_dice, pipeline_segmenter
from medsam_kit.engine.run import (
    CHECKPOINTS,
    RunLog,
    checkpoint_path,
    remove_stale_temp_files,
    rng_state,
    set_rng_state,
)
from medsam_kit.models import load_model, load_state_dict_strict, read_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from medsam_kit.methods.base import TrainContext, ValidationObserver

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did: per-step mean losses, validations, best checkpoint."""

    run_dir: Path
    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    best_val_dice: float | None = None
    best_step: int | None = None


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given (error if CUDA is missing)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """LR multiplier per step: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def freeze_parts(model, patterns: list[str]) -> list[str]:
    """Freeze parameters by part / name patterns (see :mod:`medsam_kit.engine.config`); returns frozen names."""
    groups = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    frozen: list[str] = []
    for pattern in patterns:
        parts = [g for g in groups if re.fullmatch(pattern, g)]
        if parts:
            params = [p for g in parts for p in groups[g]]
        else:
            params = [p for n, p in model.named_parameters() if re.search(pattern, n)]
        if not params:
            raise ValueError(
                f"trainable.freeze pattern {pattern!r} matches no model part ({', '.join(groups)}) and no "
                "parameter name"
            )
        for p in params:
            p.requires_grad_(False)
            frozen.append(names[id(p)])
    return frozen


class _NullLog:
    """The run log of ranks other than 0: they write nothing."""

    def restart(self, step: int) -> None: ...
    def log(self, record: dict) -> None: ...
    def plot(self) -> None: ...
    def close(self) -> None: ...


class Trainer:
    """One training loop for every method (module docstring).

    Args:
        config: the experiment (:func:`medsam_kit.engine.config.load_config`).
        run_dir: the run folder (created).
        callbacks: progress observers (module docstring).
        method: a :class:`~medsam_kit.methods.base.TrainingMethod`; default ``get_method(config.method)``.
        tensorboard: write TensorBoard scalars when the package is installed.
    """

    def __init__(self, config: ExperimentConfig, run_dir, *, callbacks=(), method=None,
                 tensorboard: bool = True) -> None:
        from medsam_kit.methods import TrainingMethod, get_method  # methods import engine.losses

        if method is not None and not isinstance(method, TrainingMethod):
            raise TypeError(f"method must be a medsam_kit.methods.TrainingMethod (docs/methods.md), got "
                            f"{type(method).__name__}")
        self.config = config
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.method = method if method is not None else get_method(config.method)
        self.tensorboard = tensorboard
        self.device = resolve_device(config.train.device)
        self.dist = DistInfo()
        self._dist_ready = False
        self._owns_group = False
        self.model = None
        self.unlabeled_cases = None
        self._prepared: Path | None = None

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def is_main(self) -> bool:
        """Rank 0 (always True in a single process): writes the run folder and validates."""
        return self.dist.is_main

    @property
    def needs_unlabeled(self) -> bool:
        return bool(self.method.needs_unlabeled)

    def _init_distributed(self) -> None:
        """Join the torchrun process group once (no-op in a single process); sets the rank's device."""
        if not self._dist_ready:
            self.dist, self.device, self._owns_group = init_distributed(self.device)
            self._dist_ready = True

    # ------------------------------------------------------------------ setup
    def _notify(self, event: str, *args) -> None:
        if not self.is_main:  # callbacks print / draw progress: once per job
            return
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(*args)

    def prepared_dir(self, progress=None) -> Path:
        """The prepared data folder; a raw ``data.raw`` folder is prepared into ``RUN/prepared`` first."""
        data = self.config.data
        if data.prepared:
            return Path(data.prepared)
        if data.raw:
            if not data.dataset:
                raise ValueError("data.raw needs data.dataset (acdc, bhsd, brats, brats2021, em, nnunet)")
            if self._prepared is None:  # once per Trainer; a re-run of prepare skips up-to-date cases anyway
                self._init_distributed()
                if self.is_main:  # rank 0 prepares; the others wait, then read what it wrote
                    prepare(data.dataset, data.raw, self.run_dir / "prepared", progress=progress,
                            labeled_budget=data.labeled_budget)
                barrier(self.dist)
                self._prepared = self.run_dir / "prepared"
            return self._prepared
        raise ValueError("the config names no data: set data.prepared or data.raw + data.dataset (or --data DIR)")

    def setup(self, progress=None, write_config: bool = True) -> None:
        """Load data and split, build the model and method; write config (unless ``write_config`` is
        False: a resume writes it once the checkpoint has loaded) / fingerprint / plan / split."""
        cfg = self.config
        self._init_distributed()
        self.shard = shard(cfg.train.batch_size, self.dist, "train.batch_size")
        unlabeled_batch = cfg.train.unlabeled_batch_size or cfg.train.batch_size
        if self.needs_unlabeled:
            self.unlabeled_shard = shard(unlabeled_batch, self.dist,
                                         "train.unlabeled_batch_size" if cfg.train.unlabeled_batch_size
                                         else "train.batch_size (the unlabeled batch size by default)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepared_dir = self.prepared_dir(progress)
        dataset = load_prepared(prepared_dir)
        split_path = prepared_dir / "split.json"
        if not split_path.is_file():
            raise FileNotFoundError(
                f"{split_path}: no split; re-run `medsam-kit prepare` with --split-protocol (training needs "
                "train_labeled and val cases)"
            )
        split = json.loads(split_path.read_text(encoding="utf-8"))
        budget = cfg.data.labeled_budget
        if budget is not None and split.get("params", {}).get("labeled_budget") != budget:
            raise ValueError(
                f"data.labeled_budget is {budget} but {split_path} was made with labeled_budget "
                f"{split.get('params', {}).get('labeled_budget')}; prepare the folder with --labeled-budget {budget} "
                f"or train from the raw folder (data.raw)")
        if not split.get("train_labeled"):
            raise ValueError(f"{split_path}: the split has no train_labeled cases")
        self.plan = dataset.plan
        self.train_cases = dataset.select(split["train_labeled"])
        self.val_cases = dataset.select(split.get("val", []))
        # Budget-hidden training cases keep their labels on disk; the unlabeled stream never reads them.
        self.unlabeled_cases = dataset.select(split.get("train_unlabeled", []))
        if self.needs_unlabeled and not self.unlabeled_cases.entries:
            counts = ", ".join(f"{k}: {len(v)}" for k, v in split.items() if isinstance(v, list))
            raise ValueError(
                f"{split_path}: method {self.method.name or type(self.method).__name__!r} needs unlabeled "
                f"training cases but the split's train_unlabeled is empty ({counts}); prepare with a labeled budget "
                "(`medsam-kit prepare DATASET SRC --out DIR --labeled-budget N`) or add unlabeled cases"
            )
        self.class_values = sorted(v for v in self.plan.label_names if v != 0)
        lut = np.zeros(max([0, *self.plan.label_names]) + 1, np.int64)
        lut[self.class_values] = np.arange(1, len(self.class_values) + 1)
        self.label_lut = torch.from_numpy(lut)
        self.intensity = intensity_spec(self.plan)
        self.augment = SpatialAugment(cfg.augment.params(), unit_pad_value(self.intensity), cfg.train.seed,
                                      cfg.augment.intensity_params())
        in_channels = len(self.plan.channel_names)
        if cfg.model.in_channels not in (None, in_channels):
            raise ValueError(
                f"model.in_channels is {cfg.model.in_channels} but the data has {in_channels} channel(s) "
                f"{list(self.plan.channel_names)}; leave it null to follow the data"
            )

        torch.manual_seed(cfg.train.seed)  # deterministic random init
        options = dict(cfg.model.options)
        # Fine-tuned weights are ours: SAM-2's eval-mode multimask fallback would swap the trained
        # single-mask token for untrained ones during validation (medsam_kit.models.factory).
        options.setdefault("decoder_postprocessing", False)
        self.model = load_model(cfg.model.name, cfg.model.checkpoint, image_size=cfg.model.image_size,
                                in_channels=in_channels, num_classes=len(self.class_values), **options)
        self.model.to(self.device)
        self.frozen = freeze_parts(self.model, list(cfg.trainable.freeze))
        amp = cfg.train.amp
        self.amp = self.device.type == "cuda" and amp in ("auto", True)
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        # Identical on every rank already (same seed and code); copying rank 0's is DDP's safeguard.
        broadcast_parameters([*self.model.parameters(), *self.model.buffers()], self.dist)
        self.context = self._context()
        self.method.setup(self.context)  # before the optimizer: the method may add trainable modules
        model_params = [p for p in self.model.parameters() if p.requires_grad]
        extra = self._method_parameters({id(p) for p in self.model.parameters()})
        broadcast_parameters(extra, self.dist)
        self.params = model_params + extra
        if not self.params:
            raise ValueError("trainable.freeze froze every parameter; nothing to train")
        o = cfg.optim
        groups = [{"params": model_params}] + ([{"params": extra}] if extra else [])
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(o.warmup_steps, cfg.train.steps, o.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.extra = {
            "dataset": self.plan.dataset,
            "label_names": {int(k): v for k, v in self.plan.label_names.items()},
            "class_values": list(self.class_values),
            "channel_names": list(self.plan.channel_names),
            "plan": json.loads(json.dumps(self.plan.to_dict())),  # lists, as in plan.json
            "intensity_to_unit": dict(self.intensity),
        }
        if not self.is_main:
            return
        if write_config:
            save_config(cfg, self.run_dir / "config.yaml")
        for name in ("fingerprint.json", "plan.json", "split.json"):
            text = (prepared_dir / name).read_text(encoding="utf-8")
            target = self.run_dir / name
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")

    def _context(self) -> TrainContext:
        """What the method's ``setup`` may read (:class:`~medsam_kit.methods.base.TrainContext`)."""
        from medsam_kit.methods.base import TrainContext

        t = self.config.train
        return TrainContext(
            model=self.model, device=self.device, train_cases=self.train_cases, unlabeled_cases=self.unlabeled_cases,
            class_values=tuple(self.class_values), label_lut=self.label_lut, intensity=self.intensity,
            augment=self.augment, steps=int(t.steps), grad_accumulation=int(t.grad_accumulation),
            val_batch_size=int(t.val_batch_size), amp=self.amp, amp_dtype=self.amp_dtype, rank=self.rank,
            world_size=self.world_size,
        )

    def _method_parameters(self, exclude: set[int]) -> list[torch.nn.Parameter]:
        """Trainable ``method.parameters()`` (e.g. SSS's DFE) not already among the model's, in order."""
        extra: list[torch.nn.Parameter] = []
        for param in self.method.parameters():
            if param.requires_grad and id(param) not in exclude:
                exclude.add(id(param))
                extra.append(param)
        return extra

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, which: str, step: int, val_dice: float | None, with_state: bool) -> Path:
        extra = {**self.extra, "step": step}
        if val_dice is not None:
            extra["val_dice"] = float(val_dice)
        if with_state:
            extra["trainer_state"] = {
                "step": step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "method": self.method.state_dict(),
                "rng": rng_state(),
                "best_val_dice": self.best_val_dice,
                "best_step": self.best_step,
                "select_on": self.config.train.select_on,
            }
        return save_checkpoint(self.model, checkpoint_path(self.run_dir, which), extra)

    def _resume(self) -> int:
        path = checkpoint_path(self.run_dir, "last")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: nothing to resume; start without --resume")
        ckpt = read_checkpoint(path)
        state = ckpt.extra.get("trainer_state")
        if state is None:
            raise ValueError(f"{path} has no trainer_state; it cannot be resumed")
        load_state_dict_strict(self.model, ckpt.state_dict, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state.get("method", {}))
        self.best_val_dice, self.best_step = state["best_val_dice"], state["best_step"]
        if state.get("select_on", "coarse") != self.config.train.select_on:  # runs before val_modes chose on coarse
            self.best_val_dice, self.best_step = None, None  # another score: best.pt is chosen anew from here
        set_rng_state(state["rng"])
        return int(state["step"])

    # ------------------------------------------------------------------ loop
    def _loader(self, start_step: int, unlabeled: bool = False) -> DataLoader:
        """This rank's share of each micro-batch from optimizer step ``start_step`` on (module docstring)."""
        t = self.config.train
        if unlabeled:
            cases, global_size, (first, size) = self.unlabeled_cases, t.unlabeled_batch_size or t.batch_size, \
                self.unlabeled_shard
        else:
            cases, global_size, (first, size) = self.train_cases, t.batch_size, self.shard
        micro_batches = t.steps * t.grad_accumulation
        sampler = SliceSampler(
            cases,
            patch_size=(self.model.image_size,) * 2,
            labeled=not unlabeled,
            foreground_probability=self.config.sampler.foreground_probability,
            pad_mode=self.config.sampler.pad_mode,
            num_samples=micro_batches * global_size,
            seed=t.seed + 1 if unlabeled else t.seed,
        )
        return DataLoader(
            sampler,
            batch_size=size,
            sampler=ShardSampler(start_step * t.grad_accumulation, micro_batches, global_size, first, size),
            num_workers=self.config.data.num_workers,
            generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG untouched
            pin_memory=self.device.type == "cuda",
        )

    def _to_device(self, batch: dict) -> dict:
        return {
            "image": to_unit(batch["image"], self.intensity).to(self.device, non_blocking=True),
            "label": self.label_lut[batch["label"]].to(self.device, non_blocking=True),
        }

    def _unlabeled_to_device(self, batch: dict) -> dict:
        return {
            "image": to_unit(batch["image"], self.intensity).to(self.device, non_blocking=True),
            "case_id": list(batch["case_id"]),
            "patch_origin": batch["patch_origin"],
        }

    def _augment(self, batch: dict, micro: int) -> dict:
        return self.augment(batch, micro, self.shard[0], self.config.train.batch_size)

    def fit(self, resume: bool = False, stop_at: int | None = None, progress=None,
            accept_changes: bool = False) -> FitResult:
        """Train to ``config.train.steps`` (or stop after step ``stop_at``, as an interruption would).

        Args:
            resume: continue from ``RUN/checkpoints/last.pt``.
            stop_at: stop after this step (checkpointing it), leaving the schedule of the full run.
            progress: ``progress(done, total)`` for data preparation from a raw folder.
            accept_changes: resume even when the config differs from the run's ``config.yaml`` in keys
                outside :data:`~medsam_kit.engine.config.RESUMABLE_KEYS` (recorded in ``config_changes.jsonl``).

        Raises:
            FileExistsError: the run folder already holds a run and ``resume`` is False.
            ValueError: under torchrun, a batch size the processes cannot share evenly; a resume with a
                changed config without ``accept_changes`` (the message lists the changed keys).
        """
        try:
            last = checkpoint_path(self.run_dir, "last")
            if not resume and last.is_file():
                raise FileExistsError(
                    f"{self.run_dir} already holds a training run; pass --resume to continue it or choose another "
                    "--out"
                )
            changes = self._resume_changes(accept_changes) if resume and last.is_file() else {}
            return self._fit(resume, stop_at, progress, changes, accept_changes)
        finally:
            cleanup(self._owns_group)
            self._owns_group = self._dist_ready = False

    def _resume_changes(self, accept_changes: bool) -> dict:
        """Differences between the config and the run's ``config.yaml``; raise unless resumable or accepted."""
        saved = self.run_dir / "config.yaml"
        if not saved.is_file():
            return {}
        how = ("resume with the run's config, start a new run (another --out), or pass --resume-with-changes "
               f"to continue with the change (recorded in {self.run_dir / 'config_changes.jsonl'})")
        try:
            old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            if accept_changes:
                return {"config.yaml": ("unreadable", "replaced")}
            raise ValueError(f"{saved}: not readable YAML ({str(exc).splitlines()[0]}), so the resumed config "
                             f"cannot be checked against it; restore it, or {how}") from None
        changes = config_changes(old if isinstance(old, dict) else {}, self.config)
        refused = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
        if refused and not accept_changes:
            raise ValueError(f"{saved}: --resume with a changed config: {format_changes(refused)}; {how}")
        return changes

    def _record_changes(self, changes: dict, step: int, accepted: bool) -> None:
        """Append one line to ``config_changes.jsonl`` (rewritten atomically: no torn line of its own)."""
        from medsam_kit.io import atomic_write_text

        path = self.run_dir / "config_changes.jsonl"
        record = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "step": step,
            "accepted": "--resume-with-changes" if accepted and not set(changes) <= RESUMABLE_KEYS
            else "resumable keys",
            "changes": {key: [old, new] for key, (old, new) in changes.items()},
        }
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write_text(path, text + json.dumps(record) + "\n")

    def _remove_stale_temp_files(self) -> None:
        for folder in (self.run_dir, self.run_dir / CHECKPOINTS):
            removed = remove_stale_temp_files(folder)
            if removed:
                logger.warning("removed %d temporary file(s) left in %s by an interrupted write: %s", len(removed),
                               folder, ", ".join(p.name for p in removed))

    def _fit(self, resume: bool, stop_at: int | None, progress, changes: dict, accept_changes: bool) -> FitResult:
        self.setup(progress, write_config=not resume)
        if self.is_main:
            self._remove_stale_temp_files()
        t = self.config.train
        self.best_val_dice, self.best_step = None, None
        start = self._resume() if resume else 0
        if resume and self.is_main:
            if changes:
                self._record_changes(changes, start, accept_changes)
            save_config(self.config, self.run_dir / "config.yaml")
        log = RunLog(self.run_dir, tensorboard=self.tensorboard) if self.is_main else _NullLog()
        log.restart(start)
        end = t.steps if stop_at is None else min(t.steps, stop_at)
        result = FitResult(self.run_dir, start, start)
        self._notify("on_start", self, start, end)
        try:
            if t.validate_at_start and start == 0 and self.val_cases.entries:
                self._validate_and_log(0, log, result)
            self.model.train()
            batches = iter(self._loader(start))
            unlabeled = iter(self._loader(start, unlabeled=True)) if self.needs_unlabeled else None
            micro = start * t.grad_accumulation
            for step in range(start + 1, end + 1):
                tic = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                for _ in range(t.grad_accumulation):
                    batch = self._augment(self._to_device(next(batches)), micro)
                    if unlabeled is not None:
                        batch["unlabeled"] = self._unlabeled_to_device(next(unlabeled))
                    with self._autocast():
                        loss, logs = self.method.loss(self.model, batch, micro)
                    self.scaler.scale(loss / t.grad_accumulation).backward()
                    micro += 1
                    for key, value in logs.items():
                        sums[key] = sums.get(key, 0.0) + value / t.grad_accumulation
                average_gradients(self.params, self.dist)  # scaled grads: inf/nan reach every rank alike
                if self.config.optim.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.method.after_step(self.model, step)
                sums = average_logs(sums, self.dist, self.device)
                record = {"kind": "train", "step": step, **sums, "lr": lr, "seconds": time.perf_counter() - tic}
                log.log(record)
                result.losses.append(sums["loss"])
                result.step = step
                self._notify("on_step", step, record)
                validate = t.val_every and (step % t.val_every == 0 or step == t.steps)
                if validate and self.val_cases.entries:
                    self._validate_and_log(step, log, result)
                    self.model.train()
                if (step % t.checkpoint_every == 0 or step == end) and self.is_main:
                    self._save("last", step, None, with_state=True)
            log.plot()
        finally:
            log.close()
        # Rank 0 holds the validations; every rank returns the same result, once the files are written.
        result.validations, self.best_val_dice, self.best_step = broadcast_object(
            (result.validations, self.best_val_dice, self.best_step), self.dist)
        barrier(self.dist)
        result.best_val_dice, result.best_step = self.best_val_dice, self.best_step
        self._notify("on_end", result)
        return result

    def _validate_and_log(self, step: int, log: RunLog, result: FitResult) -> None:
        """Rank 0 validates, logs and keeps best.pt; the other ranks wait for it."""
        if not self.is_main:
            barrier(self.dist)
            return
        val = self.validate()
        record = {"kind": "val", "step": step, **val}
        log.log(record)
        result.validations.append(record)
        if step > 0 and (self.best_val_dice is None or val["val_dice"] > self.best_val_dice):
            self.best_val_dice, self.best_step = val["val_dice"], step
            self._save("best", step, val["val_dice"], with_state=False)
        self._notify("on_validation", step, record)
        log.plot()
        barrier(self.dist)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def predict_case(self, image: np.ndarray, calibration: PseudoLabelCalibration | ValidationObserver | None = None,
                     label: np.ndarray | None = None, model: torch.nn.Module | None = None) -> np.ndarray:
        """Coarse-head labels ``(Z, Y, X)`` (label values) for a preprocessed image ``(C, Z, Y, X)``;
        with ``calibration`` (anything with ``add(logits, class indices)``) and the case's ``label``, its
        logits are also counted there. ``model``:
        another model than the one trained (e.g. an SSS teacher), used as is (eval mode is the caller's)."""
        x = torch.from_numpy(np.ascontiguousarray(to_unit(np.asarray(image), self.intensity)))
        values = torch.tensor([0, *self.class_values])
        out, z = [], 0
        for logits in coarse_logit_chunks(model or self.model, x, self.config.train.val_batch_size,
                                          unit_pad_value(self.intensity), self._autocast):
            if calibration is not None:
                truth = torch.from_numpy(np.array(label[z:z + len(logits)], dtype=np.int64))
                calibration.add(logits, self.label_lut[truth])
            z += len(logits)
            out.append(values[logits.argmax(1).cpu()])
        return torch.cat(out).numpy()

    def validate(self) -> dict[str, Any]:
        """Mean Dice per class over the val cases, for each mode of ``train.val_modes``.

        Modes: ``coarse`` (the coarse head's argmax), ``auto`` (the automatic pipeline as ``predict --run``
        runs it) and ``prompted`` (one tight ground-truth box per class, propagated); see
        :mod:`medsam_kit.engine.pipeline_validation`. A case where a class is absent from both
        prediction and label does not count for that class.

        Returns:
            ``{"val_dice": mean over classes of the train.select_on mode, "val_dice_per_class": {name: mean
            over cases} of that mode, "val_select_on": mode, "val_modes": {mode: {"mean", "per_class"}}}``,
            plus the ``logs()`` of the method's validation observer
            (:meth:`~medsam_kit.methods.base.TrainingMethod.validation_observer`), which sees the coarse
            logits of every val case (e.g. SSS: how many pixels pass its confidence threshold).
        """
        t = self.config.train
        was_training = self.model.training
        self.model.eval()
        observer = self.method.validation_observer(len(self.class_values) + 1)
        names = self.plan.label_names
        coarse = DiceTally(self.class_values)
        for case in self.val_cases:
            label = np.asarray(case.label)
            coarse.add(self.predict_case(case.image, observer, label), label)
        mean, per_class = coarse.summary(names)
        modes = {"coarse": {"mean": mean, "per_class": per_class}}
        pipeline = [m for m in t.val_modes if m != "coarse"]
        if pipeline:
            segmenter = pipeline_segmenter(self.model, self.class_values, names,
                                           lambda image: to_unit(image, self.intensity), self.device,
                                           t.val_batch_size)
            modes.update(pipeline_dice(segmenter, self.val_cases, pipeline, self.class_values, names))
        self.model.train(was_training)
        chosen = modes[t.select_on]
        record = {"val_dice": chosen["mean"], "val_dice_per_class": chosen["per_class"], "val_select_on": t.select_on,
                  "val_modes": modes}
        if observer is not None:
            record.update(observer.logs())
        return record
