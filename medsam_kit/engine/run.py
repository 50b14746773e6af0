"""The run folder: what the trainer writes, and :func:`load_run` to get the model back from it alone.

Layout (the contract between training and inference)::

    RUN/config.yaml              resolved experiment config
    RUN/fingerprint.json, RUN/plan.json, RUN/split.json   copied from the prepared data
    RUN/checkpoints/last.pt      medsam_kit checkpoint + extra["trainer_state"] (optimizer, scheduler,
                                 step, RNG states) for --resume
    RUN/checkpoints/best.pt      medsam_kit checkpoint with the best validation mean Dice
    RUN/metrics.jsonl            one JSON object per optimizer step / validation
    RUN/config_changes.jsonl     one JSON object per resume that changed the config (step, changes)
    RUN/progress.png             losses and validation Dice
    RUN/tensorboard/             TensorBoard scalars (when the tensorboard package is installed)

Every checkpoint's ``extra`` holds ``dataset``, ``label_names`` ``{int: str}``, ``channel_names``,
``plan`` (``PreprocessingPlan.to_dict()``), ``intensity_to_unit`` (:mod:`medsam_kit.engine.intensity`),
``step`` and, after a validation, ``val_dice``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam_kit.models import model_from_checkpoint, read_checkpoint

CHECKPOINTS = "checkpoints"
_TB_WARNED = False
logger = logging.getLogger(__name__)
# Names medsam_kit.io.atomic.atomic_path gives its temporary files: mkstemp(prefix=".<stem>.",
# suffix=".tmp<suffix>") with 8 random characters of [a-z0-9_] between them.
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)*")


def checkpoint_path(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """``RUN/checkpoints/<which>.pt``."""
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def load_run(run_dir: str | os.PathLike, device: str = "cpu", which: str | None = None):
    """The trained model of a run folder and its checkpoint ``extra`` (see module docstring).

    Args:
        run_dir: folder written by :class:`~medsam_kit.engine.trainer.Trainer`.
        device: where to put the model (returned in eval mode).
        which: 'best' or 'last'; None takes best.pt, else last.pt.

    Returns:
        ``(model, extra)``; ``extra`` lacks the bulky ``trainer_state``.

    Raises:
        FileNotFoundError: no such run folder or checkpoint in it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    names = [which] if which else ["best", "last"]
    for name in names:
        path = checkpoint_path(run_dir, name)
        if path.is_file():
            ckpt = read_checkpoint(path)
            model = model_from_checkpoint(ckpt, device=device)
            extra = {k: v for k, v in ckpt.extra.items() if k != "trainer_state"}
            return model, extra
    raise FileNotFoundError(
        f"{run_dir / CHECKPOINTS}: no {' or '.join(n + '.pt' for n in names)}; "
        "is this a medsam-kit train run folder (has training written a checkpoint yet)?"
    )


class RunLog:
    """metrics.jsonl + TensorBoard scalars + progress.png for one run folder."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        self.writer = _summary_writer(self.run_dir / "tensorboard") if tensorboard else None

    def restart(self, step: int) -> None:
        """Keep the records up to ``step`` (resume: later lines of an interrupted run are dropped).

        A torn last line (the process was killed while appending it: no final newline, not JSON) is
        dropped with a warning. Any other line that is not a metrics record raises ``ValueError``
        naming the file and the line, and leaves the file as it is.
        """
        self.records = [r for r in read_metrics(self.metrics_path) if r["step"] <= step]
        self._rewrite()

    def _rewrite(self) -> None:
        from medsam_kit.io import atomic_write_text

        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record ``{"step": int, "kind": "train"|"val", ...}`` and its scalars."""
        self.records.append(record)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for tag, value in _scalars(record["kind"], {k: v for k, v in record.items() if k != "step"}):
                self.writer.add_scalar(tag, value, record["step"])

    def plot(self) -> Path:
        """Write ``progress.png``: training losses (left), validation Dice per class and mean (right)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from medsam_kit.io import atomic_path

        train = [r for r in self.records if r["kind"] == "train"]
        val = [r for r in self.records if r["kind"] == "val"]
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
        steps = [r["step"] for r in train]
        for key in ("loss", "coarse_loss", "decoder_loss"):
            if train and key in train[0]:
                ax_loss.plot(steps, [r.get(key, float("nan")) for r in train], label=key, lw=1)
        ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
        if train:
            ax_loss.legend()
        selected = val[-1].get("val_select_on", "coarse") if val else "coarse"
        if val:
            vsteps = [r["step"] for r in val]
            modes = list(val[-1].get("val_modes") or {})
            for mode, style in zip(modes, ("k-o", "b-s", "g-^", "m-v"), strict=False):  # every mode's mean
                means = [(r.get("val_modes") or {}).get(mode, {}).get("mean", float("nan")) for r in val]
                ax_val.plot(vsteps, means, style, label=f"{mode} mean", lw=2 if mode == selected else 1)
            if not modes:  # runs written before validation had modes
                ax_val.plot(vsteps, [r["val_dice"] for r in val], "k-o", label="mean", lw=2)
            for name in val[-1].get("val_dice_per_class", {}):
                ax_val.plot(vsteps, [r["val_dice_per_class"].get(name, float("nan")) for r in val], "--",
                            label=f"{name} ({selected})")
            ax_val.legend(fontsize="small")
        ax_val.set(xlabel="step", ylabel="Dice", title=f"validation Dice (best.pt on {selected})", ylim=(0, 1))
        fig.tight_layout()
        target = self.run_dir / "progress.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
        return target

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _scalars(prefix: str, values: dict):
    """``(tag, number)`` pairs of a record, nested dicts as ``prefix/key/name`` (TensorBoard tags)."""
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            yield f"{prefix}/{key}", value
        elif isinstance(value, dict):
            yield from _scalars(f"{prefix}/{key}", value)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (``[]`` when it does not exist); see :meth:`RunLog.restart`."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" after a final newline; else a line whose append never finished
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(_metrics_record(path, number, line))
    if torn.strip():  # NUL bytes (what a crash of the machine can leave past the last write) count as torn
        try:
            records.append(_metrics_record(path, len(lines) + 1, torn))
        except ValueError:
            logger.warning("%s: dropped the incomplete last line %d (%d bytes; the run was stopped while writing "
                           "it)", path, len(lines) + 1, len(torn.encode()))
    return records


def _metrics_record(path: Path, number: int, line: str) -> dict[str, Any]:
    fix = "fix or delete that line (lines after a resumed step are dropped anyway), or start a new run"
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"{path}: line {number} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: line {number} is not a JSON object; {fix}")
    if type(record.get("step")) is not int or not isinstance(record.get("kind"), str):
        raise ValueError(f"{path}: line {number} is not a metrics record (needs an integer \"step\" and a "
                         f"\"kind\"); {fix}")
    return record


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted atomic write (:func:`medsam_kit.io.atomic_path`, e.g. a
    checkpoint save under kill -9) left directly in ``folder``; returns them. Only for a folder no other
    process is writing to: a run folder when its run (re)starts."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if _TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _summary_writer(folder: Path):
    """A TensorBoard ``SummaryWriter``, or None with a one-time warning when tensorboard is missing."""
    global _TB_WARNED
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the separate `tensorboard` package
        if not _TB_WARNED:
            warnings.warn(
                "tensorboard is not installed: TensorBoard scalars are skipped (metrics.jsonl and progress.png "
                "are still written); `pip install tensorboard` to get them",
                stacklevel=3,
            )
            _TB_WARNED = True
        return None
    return SummaryWriter(log_dir=str(folder))


def rng_state() -> dict[str, Any]:
    """Global torch / CUDA / numpy / Python RNG states as checkpoint-safe data (``weights_only`` loadable)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
