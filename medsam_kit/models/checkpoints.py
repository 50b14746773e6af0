"""Checkpoint files: recognise the format, load with strict key matching, write this project's format.

Formats read (always ``torch.load(path, map_location="cpu", weights_only=True)``):

* ``"medsam_kit"`` -- this project's run checkpoints, written by :func:`save_checkpoint`:
  ``{"format": "medsam_kit", "format_version": 1, "model_name": str, "config": dict,
  "state_dict": {key: tensor}, "extra": dict}``. The config describes the whole network
  (architecture, channels, classes, pruned widths, adapters), so the file alone rebuilds it.
* ``"sam2"`` -- official SAM-2 / SAM-2.1 checkpoints and MedSAM2 (SAM-2.1 tiny weights):
  ``{"model": state_dict}``. MedSAM-style training checkpoints ``{"model": ..., "optimizer": ...}``
  are read the same way.
* ``"state_dict"`` -- official SAM-1 checkpoints and MedSAM (SAM-1 ViT-B): a bare state dict.

A DistributedDataParallel ``module.`` prefix on every key is removed; nothing else is forgiven.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_NAME = "medsam_kit"
FORMAT_VERSION = 1
_SHOW = 5  # keys listed per category in an error message


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model (message names the file and keys)."""


@dataclass
class Checkpoint:
    """A checkpoint read from disk.

    Attributes:
        path: the file.
        kind: ``"medsam_kit"``, ``"sam2"`` (``{"model": ...}``) or ``"state_dict"`` (bare).
        state_dict: parameter and buffer tensors, keys without any ``module.`` prefix.
        model_name: registry name stored in a ``medsam_kit`` file, else None.
        config: model config stored in a ``medsam_kit`` file, else None.
        extra: anything else a ``medsam_kit`` file carries (training step, metrics...).
    """

    path: Path
    kind: str
    state_dict: dict[str, torch.Tensor]
    model_name: str | None = None
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike | Checkpoint) -> Checkpoint:
    """Read a checkpoint file in any supported format (see module docstring); a read one passes through.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable with ``weights_only=True`` or not a recognised layout.
    """
    if isinstance(path, Checkpoint):  # already read (callers that inspect it first read the file once)
        return path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # the weights-only unpickler met a Python object it will not build
        raise CheckpointError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {_unpickler_reason(err)}; "
            "files holding pickled Python objects are refused -- re-save only the state dict "
            "(torch.save(model.state_dict(), path))"
        ) from None
    except Exception as err:  # torch raises RuntimeError, OSError, EOFError... depending on the damage
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
            f"({type(err).__name__}: {_first_line(err)}); copy or download it again"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    if obj.get("format") == FORMAT_NAME:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has medsam_kit format version {version}, this code reads {FORMAT_VERSION}"
            )
        return Checkpoint(
            path,
            FORMAT_NAME,
            _tensors(obj.get("state_dict"), path),
            obj.get("model_name"),
            obj.get("config"),
            dict(obj.get("extra") or {}),
        )
    if isinstance(obj.get("model"), dict):
        return Checkpoint(path, "sam2", _tensors(obj["model"], path))
    return Checkpoint(path, "state_dict", _tensors(obj, path))


def _unpickler_reason(err: Exception) -> str:
    """The line of torch's long weights-only message that names what was refused."""
    found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global|\.?\n|$)", str(err))
    return found.group(1).strip()[:200] if found else _first_line(err)


def _first_line(err: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours parts of its messages
    return (text.splitlines()[0] if text else "no details")[:200]


def _tensors(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            f"checkpoint {path} has no state dict (expected {{name: tensor}} or {{'model': {{...}}}})"
        )
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {path} is not a state dict: {len(not_tensors)} entries are not tensors "
            f"(e.g. {', '.join(map(str, not_tensors[:_SHOW]))}); expected a bare state dict, {{'model': state_dict}} "
            "or a medsam_kit checkpoint"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def guess_family(keys) -> str | None:
    """``"sam2"``, ``"sam"`` or None, judged from characteristic state-dict keys (for error hints)."""
    keys = list(keys)
    if any(".trunk." in k or k.startswith("image_encoder.trunk") for k in keys):
        return "sam2"
    if any(k.startswith(("image_encoder.blocks.", "sam.image_encoder.blocks.")) for k in keys):
        return "sam"
    return None


def load_state_dict_strict(
    module: nn.Module, state_dict: dict[str, torch.Tensor], source: str | os.PathLike, target: str = "model"
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with one readable error on any mismatch.

    Raises:
        CheckpointError: names ``source``, ``target`` and the first few missing, unexpected and
            mis-shaped keys with their counts (one line, so the CLI can print it as is).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                more = f", ... {len(items) - _SHOW} more" if len(items) > _SHOW else ""
                parts.append(
                    f"{len(items)} {label} key{'s' if len(items) != 1 else ''}: {', '.join(items[:_SHOW])}{more}"
                )
        hint = ""
        file_family, model_family = guess_family(state_dict), guess_family(expected)
        if file_family and model_family and file_family != model_family:
            names = {"sam2": "a SAM-2 (sam2.1_hiera_*)", "sam": "a SAM-1 (sam_vit_*)"}
            hint = f"; the file looks like {names[file_family]} checkpoint, the model is {names[model_family]} model"
        elif misshaped and not missing and not unexpected:
            hint = (
                "; same layout, other widths: pick the registry size the file was made with (or its medsam_kit config)"
            )
        raise CheckpointError(f"checkpoint {source} does not fit {target}: {'; '.join(parts)}{hint}")
    module.load_state_dict(state_dict, strict=True)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a :class:`~medsam_kit.models.segmenter_model.SegmenterModel`) as a medsam_kit checkpoint.

    The file is written atomically and holds the model's config (plain JSON-compatible data), its
    registry name and ``state_dict`` (tensors moved to CPU), plus ``extra`` (plain data only:
    numbers, strings, lists, dicts, tensors -- what ``weights_only=True`` can read back).
    """
    from medsam_kit.io import atomic_path

    config = json.loads(json.dumps(model.config))  # plain types only; fails early on anything exotic
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_name": config.get("model_name"),
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
