"""Prompts for SAM-family decoders: types, prompts from masks, user JSON files, PCSW.

Conventions (details in :mod:`medsam_kit.prompts.types`): a slice is ``(Y, X)``; boxes are
``(x0, y0, x1, y1)`` in (column, row) order, **inclusive-exclusive** (an integer box selects
``slice[y0:y1, x0:x1]``); points are ``(x, y)`` pixel-index coordinates (pixel centre of
``slice[r, c]`` is ``(c, r)``) with labels 1 positive / 0 negative, as SAM expects. A
:class:`PromptSet` maps ``{label_value: {slice_index: SlicePrompts}}`` for a ``(Z, Y, X)`` volume.

Modules: :mod:`.types`, :mod:`.from_masks` (ground-truth prompts with jitter), :mod:`.batch`
(fixed-shape batched arrays), :mod:`.user_file` (the JSON prompt file), :mod:`.pcsw` (SSS's
physical-constraint sliding-window prompts from coarse masks). numpy/scipy only — no torch.
"""

from __future__ import annotations

from medsam_kit.prompts.batch import BatchPrompts, batch_prompts_from_labels
from medsam_kit.prompts.from_masks import (
    GBT_SAM_BOX_ENLARGE,
    MaskPromptConfig,
    box_from_mask,
    center_point,
    mask_prompt,
    negative_points,
    perturb_box,
    positive_points,
    prompt_set_from_labels,
    slice_prompts_from_labels,
    slice_prompts_from_mask,
    tight_box,
)
from medsam_kit.prompts.pcsw import PcswPrompt, pcsw_class_prompt, pcsw_prompt_set, pcsw_prompts, pcsw_window_lengths
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts
from medsam_kit.prompts.user_file import dump_prompt_file, load_prompt_file, parse_prompts, prompts_to_dict

__all__ = [
    "GBT_SAM_BOX_ENLARGE",
    "BatchPrompts",
    "BoxPrompt",
    "MaskPromptConfig",
    "PcswPrompt",
    "PointPrompts",
    "PromptSet",
    "SlicePrompts",
    "batch_prompts_from_labels",
    "box_from_mask",
    "center_point",
    "dump_prompt_file",
    "load_prompt_file",
    "mask_prompt",
    "negative_points",
    "parse_prompts",
    "pcsw_class_prompt",
    "pcsw_prompt_set",
    "pcsw_prompts",
    "pcsw_window_lengths",
    "perturb_box",
    "positive_points",
    "prompt_set_from_labels",
    "prompts_to_dict",
    "slice_prompts_from_labels",
    "slice_prompts_from_mask",
    "tight_box",
]
