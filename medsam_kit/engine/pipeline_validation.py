"""Validation of what users get: the automatic pipeline and one-box prompts, not only the coarse head.

The coarse head's Dice says how well the model labels pixels; a user of ``predict`` gets the output of
the whole automatic pipeline (coarse head -> PCSW prompts -> decoder -> propagation -> refinement), and
a Slicer user the prompted path. With few labeled volumes the two can differ by tenths of Dice, so
validation scores every mode of ``train.val_modes`` (:data:`~medsam_kit.engine.config.VAL_MODES`)
through the same :class:`~medsam_kit.infer.Segmenter` that ``predict --run`` builds (native windows,
propagation guided by the coarse head, ``refine="auto"``), on the prepared validation cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from medsam_kit.engine.metrics import dice_iou
from medsam_kit.infer.segmenter import Segmenter
from medsam_kit.infer.volume import PropagationOptions
from medsam_kit.prompts import prompt_set_from_labels
from medsam_kit.prompts.from_masks import MaskPromptConfig

#: One tight box per class, no points: the least a user gives (and what the end-to-end test measures).
ONE_BOX = MaskPromptConfig(box=True, jitter_px=0.0, jitter_frac=0.0, n_positive=0)


class DiceTally:
    """Per-class Dice over cases; a case where a class is absent from both prediction and label does not count."""

    def __init__(self, class_values: Sequence[int]) -> None:
        self.scores: dict[int, list[float]] = {int(v): [] for v in class_values}

    def add(self, prediction: np.ndarray, label: np.ndarray) -> None:
        for value, scores in self.scores.items():
            predicted, true = prediction == value, label == value
            if predicted.any() or true.any():
                scores.append(dice_iou(predicted, true)[0])

    def summary(self, names: Mapping[int, str]) -> tuple[float, dict[str, float]]:
        """``(mean over classes, {name: mean over cases})``; NaN for a class seen nowhere (not in the mean)."""
        per_class = {names[v]: float(np.mean(s)) if s else float("nan") for v, s in self.scores.items()}
        finite = [d for d in per_class.values() if not np.isnan(d)]
        return (float(np.mean(finite)) if finite else 0.0), per_class


def pipeline_segmenter(model, class_values: Sequence[int], label_names: Mapping[int, str],
                       intensity_to_unit: Callable[[np.ndarray], np.ndarray], device, batch_size: int) -> Segmenter:
    """The Segmenter ``predict --run`` builds for this model, for prepared (already preprocessed) volumes.

    A new one per validation: its embedding cache must not outlive the weights it was computed with.
    """
    names = {0: "background", **{int(v): str(label_names.get(v, f"class_{v}")) for v in class_values}}
    return Segmenter(model, plan=None, label_names=names, device=str(device), intensity_to_unit=intensity_to_unit,
                     batch_size=batch_size, mode="native", propagation=PropagationOptions(guide="coarse"),
                     refine="auto")


def pipeline_dice(segmenter: Segmenter, cases: Iterable, modes: Sequence[str], class_values: Sequence[int],
                  names: Mapping[int, str]) -> dict[str, dict]:
    """``{mode: {"mean": float, "per_class": {name: float}}}`` for ``modes`` among ``auto`` / ``prompted``.

    ``cases`` are prepared :class:`~medsam_kit.data.case.Case` objects with labels (``image``
    ``(C, Z, Y, X)``, ``label`` ``(Z, Y, X)`` label values).
    """
    tallies = {mode: DiceTally(class_values) for mode in modes}
    for case in cases:
        label = np.asarray(case.label)
        for mode in modes:
            prompts = None
            if mode == "prompted":
                prompts = prompt_set_from_labels(label, slices="largest", config=ONE_BOX)
                if not prompts.labels():
                    continue  # no foreground at all: nothing to prompt
            result = segmenter.segment_volume(np.asarray(case.image), prompts, geometry=case.geometry)
            tallies[mode].add(result.labels, label)
    out = {}
    for mode, tally in tallies.items():
        mean, per_class = tally.summary(names)
        out[mode] = {"mean": mean, "per_class": per_class}
    return out
