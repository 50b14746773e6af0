"""Experiment configuration: typed sections loaded from YAML, unknown keys rejected, resolved copy saved.

A config file has these sections (every key optional; defaults below)::

    name: acdc_supervised
    model:     {name, image_size, in_channels (null: from the data), checkpoint, options}
    data:      {prepared | raw + dataset, num_workers, labeled_budget}
    sampler:   {foreground_probability, pad_mode}          # 2D slices, patch = model image size
    augment:   {probability, flip, rot90, rotate_deg, scale, translate}   # batched warps on the device
    optim:     {lr, weight_decay, betas, warmup_steps, min_lr_ratio, grad_clip}
    train:     {steps, batch_size, unlabeled_batch_size, grad_accumulation, amp, checkpoint_every,
                val_every, validate_at_start, val_batch_size, seed, device}
    trainable: {freeze: [pattern, ...]}
    method:    {name: supervised, <the method's own keys>}

``trainable.freeze`` patterns are regular expressions matched in full against the part names of
``SegmenterModel.parameter_groups()`` (``image_encoder``, ``prompt_encoder``, ``mask_decoder``,
``coarse_head``, ``memory``, ...); a pattern that names no part is searched in parameter names
(e.g. ``'sam\\.image_encoder\\.trunk\\.blocks\\.[0-2]\\.'``). A pattern matching nothing is an error.

The method section's keys other than ``name`` belong to the method (checked by
:func:`medsam_kit.methods.get_method` when the config is loaded).

Resuming a run (``medsam-kit train --resume``) compares the config with the run's ``config.yaml``
(:func:`config_changes`). Only :data:`RESUMABLE_KEYS` may differ: where and how fast the run goes,
how often it checkpoints and validates, and ``train.steps`` (train longer or shorter; the cosine LR
schedule is recomputed for the new length, so the remaining steps follow the new curve). Any other
change is refused unless asked for (``--resume-with-changes``); accepted changes of either kind are
appended to ``RUN/config_changes.jsonl``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: What validation can score (``train.val_modes``): the coarse head, the automatic pipeline, one box per class.
VAL_MODES = ("coarse", "auto", "prompted")
# What a run written before train.val_modes existed did: validate (and pick best.pt on) the coarse head only.
_LEGACY_TRAIN = {"val_modes": ["coarse"], "select_on": "coarse"}
#: Config keys a resumed run may change without ``--resume-with-changes`` (see the module docstring).
RESUMABLE_KEYS = frozenset({
    "train.steps", "train.device", "train.checkpoint_every", "train.val_every", "train.val_batch_size",
    "train.validate_at_start", "train.val_modes", "train.select_on", "data.num_workers",
})
_PATH_KEYS = ("data.prepared", "data.raw", "model.checkpoint")  # the same file under another spelling is equal


@dataclass
class ModelConfig:
    """Which network: registry ``name`` (real sizes: ``sam2.1_hiera_tiny`` ... ``sam_vit_h``).

    Attributes:
        name: registry model name (:func:`medsam_kit.models.list_models`).
        image_size: square model input side S; slices are sampled as S x S patches.
        in_channels: input channels; None takes the prepared data's channel count.
        checkpoint: official / MedSAM / medsam_kit checkpoint to start from, or None (random init).
        options: extra model config options (``pixel_mean``, ``pixel_std``, ``adapters``, ...).
    """

    name: str = "sam2.1_hiera_tiny_test"
    image_size: int = 128
    in_channels: int | None = None
    checkpoint: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the cases come from: a prepared folder, or a raw folder prepared into ``RUN/prepared``.

    Attributes:
        prepared: folder written by ``medsam-kit prepare`` (has ``cases.json`` and ``split.json``).
        raw: raw dataset folder (used when ``prepared`` is None); needs ``dataset``.
        dataset: adapter name for ``raw`` ('acdc', 'bhsd', 'brats', 'brats2021', 'em', 'nnunet').
        num_workers: DataLoader worker processes (0: load in the training process).
        labeled_budget: labeled training patients for a ``raw`` folder's split (the rest become the
            unlabeled pool of semi-supervised methods): an int is a count on the protocol's scale
            (ACDC: out of its 70 training patients, scaled to a smaller folder, at least 1), a float
            in (0, 1] a fraction of the training patients; None keeps every label. A ``prepared``
            folder brings its own split (``medsam-kit prepare --labeled-budget``); a budget that
            differs from it is an error.
    """

    prepared: str | None = None
    raw: str | None = None
    dataset: str | None = None
    num_workers: int = 0
    labeled_budget: int | float | None = None


@dataclass
class SamplerConfig:
    """2D slice sampling (:class:`medsam_kit.data.samplers.SliceSampler`), patch = model image size.

    Attributes:
        foreground_probability: chance a sample is centred on a foreground voxel (class drawn uniformly).
        pad_mode: 'constant', 'edge' or 'reflect' for slices smaller than the patch.
    """

    foreground_probability: float = 0.67
    pad_mode: str = "constant"


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``."""

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 20
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    """Loop length and bookkeeping.

    Attributes:
        steps: optimizer steps.
        batch_size: slices per micro-batch (the global batch: under ``torchrun --nproc_per_node N``
            each process takes ``batch_size / N`` of them, so it must be a multiple of N).
        unlabeled_batch_size: unlabeled slices per micro-batch for methods that use the split's
            ``train_unlabeled`` cases (e.g. ``sss``); None: ``batch_size``. Also global.
        grad_accumulation: micro-batches per optimizer step (effective batch = product).
        amp: 'auto' (mixed precision on CUDA only), true or false.
        checkpoint_every: write ``last.pt`` every N steps (and always at the end).
        val_every: validate every N steps (and at the end); 0 disables validation.
        validate_at_start: also validate the untrained model (step 0), for comparison.
        val_batch_size: slices per forward pass in validation.
        seed: seeds sampling, prompts and initialisation.
        device: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...
        val_modes: what validation scores on the validation cases: ``coarse`` (the coarse head's
            argmax), ``auto`` (the full automatic pipeline, as ``predict`` runs it: what users get),
            ``prompted`` (one tight ground-truth box per class on its largest slice, propagated).
        select_on: the mode whose mean Dice picks ``best.pt`` (one of ``val_modes``).
    """

    steps: int = 300
    batch_size: int = 4
    unlabeled_batch_size: int | None = None
    grad_accumulation: int = 1
    amp: Any = "auto"
    checkpoint_every: int = 100
    val_every: int = 100
    validate_at_start: bool = False
    val_batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    val_modes: list = field(default_factory=lambda: ["coarse", "auto", "prompted"])
    select_on: str = "auto"


@dataclass
class AugmentConfig:
    """Random affine warps of each training batch (:mod:`medsam_kit.engine.augment`).

    The default, a mild rotation / zoom / shift of 80 % of the samples, keeps a model trained on
    a few volumes from tying its answer to where structures sit in the window (a decoder trained
    without it followed the box less than the position it had seen). Flips and quarter turns
    are off by default: they erase left-right anatomy (right vs left ventricle); set ``flip`` /
    ``rot90`` for data without a preferred orientation (EM). ``probability: 0`` turns it off.

    ``intensity`` is the chance that a labeled sample's intensities change (contrast, gamma, a coil-like
    shading ramp, blur, noise; :class:`~medsam_kit.engine.augment.IntensityParams`, ranges in the
    ``intensity_*`` keys), so a model trained on a few volumes meets other contrasts; 0 (default) is off.
    """

    probability: float = 0.8
    flip: float = 0.0
    rot90: bool = False
    rotate_deg: float = 15.0
    scale: list = field(default_factory=lambda: [0.85, 1.2])
    translate: float = 0.1
    intensity: float = 0.0
    intensity_contrast: float = 0.3
    intensity_gamma: list = field(default_factory=lambda: [0.7, 1.5])
    intensity_noise: float = 0.05
    intensity_blur: float = 1.0
    intensity_bias: float = 0.3

    def params(self):
        from medsam_kit.engine.augment import AugmentParams

        if len(self.scale) != 2:
            raise ValueError(f"augment.scale must be [lo, hi], got {self.scale}")
        return AugmentParams(self.probability, self.flip, self.rot90, self.rotate_deg,
                             (float(self.scale[0]), float(self.scale[1])), self.translate)

    def intensity_params(self):
        from medsam_kit.engine.augment import IntensityParams

        if len(self.intensity_gamma) != 2:
            raise ValueError(f"augment.intensity_gamma must be [lo, hi], got {self.intensity_gamma}")
        return IntensityParams(self.intensity, contrast=self.intensity_contrast,
                               gamma_range=(float(self.intensity_gamma[0]), float(self.intensity_gamma[1])),
                               noise_std=self.intensity_noise, blur_sigma=self.intensity_blur,
                               bias=self.intensity_bias)


@dataclass
class TrainableConfig:
    """Parts to freeze (patterns, see the module docstring); everything else trains."""

    freeze: list = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A whole experiment; :func:`load_config` / :func:`config_from_dict` build it with checks."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    method: dict = field(default_factory=lambda: {"name": "supervised"})

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON-compatible)."""
        return dataclasses.asdict(self)


def _check_type(value: Any, annotation: str, where: str) -> Any:
    """Light type check for YAML scalars (ints accepted where floats are expected)."""
    hint = eval(annotation, {"Any": Any, "list": list, "dict": dict})  # noqa: S307 - our own annotations only
    allowed: tuple = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if Any in allowed:
        return value
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"config key {where} must not be empty (null)")
    if isinstance(value, int) and not isinstance(value, bool):
        if int in allowed:  # int | float keys keep an int an int (a count, not a fraction)
            return value
        if float in allowed:
            return float(value)
    if int in allowed and isinstance(value, bool):
        raise ValueError(f"config key {where} must be an integer, got {value!r}")
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))):
        names = " or ".join(t.__name__ for t in allowed)
        raise ValueError(f"config key {where} must be {names}, got {value!r} ({type(value).__name__})")
    return value


def _section(cls, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {where} must be a mapping of keys, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"known keys in {where}: {', '.join(known)}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _check_type(value, known[name].type, f"{where}.{name}")
    return cls(**values)


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "sampler": SamplerConfig,
    "augment": AugmentConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "trainable": TrainableConfig,
}


def config_from_dict(data: dict, source: str = "config") -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from nested plain data.

    Raises:
        ValueError: unknown section or key (the message names it and lists the known ones), a
            value of the wrong type, or a method key the method does not know.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    data = copy.deepcopy(data)
    known = {"name", "method", *_SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown config section(s) {unknown}; known sections: {sorted(known)}")
    try:
        sections = {key: _section(cls, data.get(key), key) for key, cls in _SECTIONS.items()}
        method = data.get("method") or {"name": "supervised"}
        if not isinstance(method, dict) or "name" not in method:
            raise ValueError("config section method must be a mapping with a 'name' (e.g. name: supervised)")
        from medsam_kit.methods import method_params  # lazy: methods import engine modules

        method = {"name": method["name"], **dataclasses.asdict(method_params(method))}
        config = ExperimentConfig(name=str(data.get("name", "experiment")), method=method, **sections)
        _validate(config)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    return config


def _validate(config: ExperimentConfig) -> None:
    t = config.train
    for key in ("steps", "batch_size", "grad_accumulation", "val_batch_size"):
        if getattr(t, key) < 1:
            raise ValueError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.unlabeled_batch_size is not None and t.unlabeled_batch_size < 1:
        raise ValueError(f"train.unlabeled_batch_size must be >= 1 (or null), got {t.unlabeled_batch_size}")
    if t.checkpoint_every < 1 or t.val_every < 0:
        raise ValueError("train.checkpoint_every must be >= 1 and train.val_every >= 0")
    if t.amp not in ("auto", True, False):
        raise ValueError(f"train.amp must be 'auto', true or false, got {t.amp!r}")
    unknown_modes = [m for m in t.val_modes if m not in VAL_MODES]
    if unknown_modes or not t.val_modes:
        raise ValueError(f"train.val_modes must list some of {list(VAL_MODES)}, got {t.val_modes!r}")
    if t.select_on not in t.val_modes:
        raise ValueError(f"train.select_on must be one of train.val_modes {t.val_modes}, got {t.select_on!r}")
    if not 0.0 <= config.sampler.foreground_probability <= 1.0:
        raise ValueError("sampler.foreground_probability must be in [0, 1]")
    try:
        config.augment.params()
    except ValueError as err:
        raise ValueError(str(err).replace("augment ", "augment.")) from None
    if config.optim.lr <= 0 or not 0.0 <= config.optim.min_lr_ratio <= 1.0:
        raise ValueError("optim.lr must be > 0 and optim.min_lr_ratio in [0, 1]")
    config.augment.intensity_params()  # its ranges are checked with the config, not at the first step


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> ExperimentConfig:
    """Read a YAML experiment config; ``overrides`` ``{"train.steps": 10, ...}`` are applied first.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, or a config error (see :func:`config_from_dict`), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (see configs/experiments/ for examples)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config_from_dict(data, source=str(path))


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically); :func:`load_config` reads it back equal."""
    from medsam_kit.io import atomic_write_text

    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(Path(path), text)
    return Path(path)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, Mapping) or (prefix and not data):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _same(key: str, old: Any, new: Any) -> bool:
    if old == new:
        return True
    if key in _PATH_KEYS and isinstance(old, str) and isinstance(new, str):
        return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return False


def config_changes(saved: Mapping, config: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """``{"optim.lr": (old, new), ...}``: dotted keys whose value differs between ``saved`` (a run's
    ``config.yaml`` as plain data) and ``config``; a key missing on one side has the value None there."""
    new = _flatten(yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False)))  # tuples -> lists, as saved
    with contextlib.suppress(ValueError, TypeError, AttributeError):  # else compared as written
        # keys an older version did not write take their defaults (not a change), except the ones whose
        # default changed behaviour: those take what that version did (validation on the coarse head only)
        legacy = {key: value for key, value in _LEGACY_TRAIN.items() if key not in (saved.get("train") or {})}
        saved = {**saved, "train": {**(saved.get("train") or {}), **legacy}}
        saved = yaml.safe_load(yaml.safe_dump(config_from_dict(dict(saved)).to_dict(), sort_keys=False))
    old = _flatten(saved)
    return {key: (old.get(key), new.get(key)) for key in [*new, *(k for k in old if k not in new)]
            if not _same(key, old.get(key), new.get(key))}


def format_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"optim.lr: 0.001 -> 0.01, train.seed: 0 -> 3"`` (values as JSON)."""
    import json

    return ", ".join(f"{key}: {json.dumps(old)} -> {json.dumps(new)}" for key, (old, new) in changes.items())
