"""``medsam-kit train --config CONFIG [--data DIR] [--out RUN] [--resume | --resume-with-changes]``: train a model
into a run folder."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import yaml
from tqdm import tqdm

from medsam_kit.cli._progress import progress_bar

_EPILOG = """\
run folder (RUN):
  config.yaml            the resolved config (every default filled in)
  fingerprint.json, plan.json, split.json   copied from the prepared data
  checkpoints/last.pt    model + optimizer/scheduler/RNG state (for --resume)
  checkpoints/best.pt    best validation mean Dice (validation split, never test)
  metrics.jsonl          one line per step / validation; progress.png; tensorboard/ (if installed)
  config_changes.jsonl   one line per resume that changed the config (step, old -> new values)
  prepared/              the prepared data, when --data is a raw dataset folder

--resume continues RUN with the config it was trained with: a changed key is refused (the message
lists them, e.g. optim.lr: 0.001 -> 0.01) except train.steps (train longer or shorter: the cosine
LR schedule is recomputed for the new length), train.device, data.num_workers,
train.checkpoint_every, train.val_every, train.val_batch_size, train.validate_at_start and
train.val_modes / train.select_on (a new select_on chooses best.pt anew from the resumed step; runs
written before validation had modes count as val_modes [coarse], select_on coarse).
--resume-with-changes resumes with any change. Both record what changed in config_changes.jsonl
and write the new config.yaml. Temporary files a killed save left in RUN are removed at each start.

--data accepts a prepared folder (from `medsam-kit prepare`) or a raw dataset folder of the
config's data.dataset layout, which is prepared into RUN/prepared first (skipped when up to date).
Example:
  medsam-kit phantoms acdc --out acdc_raw --cases 10
  medsam-kit train --config configs/experiments/acdc_supervised.yaml --data acdc_raw --out runs/acdc

Several GPUs (or CPU processes): the same command under torchrun, e.g.
  torchrun --nproc_per_node 4 -m medsam_kit train --config CONFIG --data DIR --out RUN
train.batch_size (and train.unlabeled_batch_size) stay the global batch, shared evenly by the
processes (a multiple of N); gradients are averaged across processes, rank 0 writes the run folder
and validates, --resume works the same. NCCL on CUDA (one GPU per process), gloo on CPU.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a SAM-family model on a dataset (supervised by default) into a run folder",
        description="Train the model an experiment config describes (model, data, sampler, optimiser, method) "
        "and write checkpoints, metrics and plots into a run folder from which the model reloads alone "
        "(`medsam-kit predict --run RUN`). Validation Dice on the split's validation cases picks best.pt.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, type=Path, metavar="YAML",
                        help="experiment config, e.g. configs/experiments/acdc_supervised.yaml")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="prepared folder or raw dataset folder (overrides the config's data section)")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="layout of a raw --data folder (default: the config's data.dataset)")
    parser.add_argument("--out", type=Path, default=None, metavar="RUN",
                        help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN from checkpoints/last.pt (same losses as without a stop); "
                             "refused when the config changed beyond train.steps / device / bookkeeping keys")
    parser.add_argument("--resume-with-changes", action="store_true",
                        help="--resume accepting a config that differs from RUN/config.yaml (e.g. another "
                             "optim.lr); the changes are recorded in RUN/config_changes.jsonl")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="cpu, cuda or cuda:N (default: the config's train.device, 'auto' = CUDA if available)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="optimizer steps (overrides train.steps; the LR schedule follows it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                        help="override any config key, VALUE read as YAML (repeatable), e.g. "
                             "--set optim.lr=3e-4 --set train.val_modes=[coarse,auto]; unknown keys are refused")
    parser.set_defaults(func=run)


def parse_set_values(items: list[str]) -> dict:
    """``["train.steps=10", "train.val_modes=[coarse]"]`` -> ``{"train.steps": 10, ...}`` (values read as YAML)."""
    overrides: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or "." not in key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. --set optim.lr=3e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "parse error"
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({problem})") from exc
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as text; a user means the number
            with contextlib.suppress(ValueError):
                value = float(value)
        overrides[key.strip()] = value
    return overrides


def config_overrides(args: argparse.Namespace) -> dict:
    """``{"section.key": value}`` overrides from the command line."""
    overrides: dict = parse_set_values(getattr(args, "set_values", []))
    if args.data is not None:
        if (args.data / "cases.json").is_file():
            overrides.update({"data.prepared": str(args.data), "data.raw": None})
        else:
            overrides.update({"data.raw": str(args.data), "data.prepared": None})
    if args.dataset is not None:
        overrides["data.dataset"] = args.dataset
    if args.device is not None:
        overrides["train.device"] = args.device
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    return overrides


class TrainProgress:
    """Trainer callback driving a tqdm bar over optimizer steps (hidden when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_start(self, trainer, start: int, total: int) -> None:
        self.bar = tqdm(total=total, initial=start, desc=f"train {trainer.config.name}", unit="step", disable=None)

    def on_step(self, step: int, logs: dict) -> None:
        self.postfix["loss"] = f"{logs['loss']:.3f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(1)

    def on_validation(self, step: int, record: dict) -> None:
        modes = record.get("val_modes") or {}
        if len(modes) > 1:  # e.g. "val coarse/auto/prompted 0.66/0.71/0.80"; best.pt follows train.select_on
            self.postfix[f"val {'/'.join(modes)}"] = "/".join(f"{m['mean']:.2f}" for m in modes.values())
        else:
            self.postfix["val_dice"] = f"{record['val_dice']:.3f}"
        if record.get("val_pseudo_coverage") is not None:  # SSS: validation pixels above the threshold / right
            self.postfix["sure/right"] = (f"{record['val_pseudo_coverage']:.0%}/"
                                          f"{record['val_pseudo_precision'] or 0:.0%}")
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def on_end(self, result) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from medsam_kit.engine.config import load_config
    from medsam_kit.engine.trainer import Trainer

    config = load_config(args.config, config_overrides(args))
    out = args.out or Path("runs") / config.name
    trainer = Trainer(config, out, callbacks=[TrainProgress()])  # callbacks run on rank 0 only under torchrun
    main_rank = os.environ.get("RANK", "0") == "0"
    if config.data.raw and not config.data.prepared:
        if main_rank:
            with progress_bar(f"prepare {config.data.dataset}") as progress:
                trainer.prepared_dir(progress)
        else:  # waits for rank 0's preparation
            trainer.prepared_dir()
    result = trainer.fit(resume=args.resume or args.resume_with_changes, accept_changes=args.resume_with_changes)
    if not main_rank:
        return 0
    best = "no validation" if result.best_val_dice is None else (
        f"best val Dice {result.best_val_dice:.3f} at step {result.best_step}")
    print(f"trained steps {result.start_step}..{result.step} of {config.name}: final loss "
          f"{result.losses[-1] if result.losses else float('nan'):.4f}, {best} -> {out}")
    return 0
