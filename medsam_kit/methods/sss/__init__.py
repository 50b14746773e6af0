"""SSS: semi-supervised SAM (weak-to-strong consistency, EMA teacher, DFE, PCSW prompts).

Modules: :mod:`.method` (:class:`SSSMethod`, :class:`SSSParams`), :mod:`.views` (weak / strong
views, CutMix), :mod:`.teacher` (EMA teacher), :mod:`.pseudo` (confidence-masked pseudo-labels and
losses), :mod:`.dfe` (discriminative feature enhancement), :mod:`.pcsw_cache` (PCSW prompts of
unlabeled volumes, cached, mapped into training crops).
"""

from __future__ import annotations

from medsam_kit.engine.coarse import PseudoLabelCalibration
from medsam_kit.methods.sss.dfe import DFE, feature_widths
from medsam_kit.methods.sss.method import SSSMethod, SSSParams
from medsam_kit.methods.sss.pcsw_cache import PcswCache, VolumePrompt, coarse_class_volume, crop_prompts
from medsam_kit.methods.sss.pseudo import MaskedCoarseLoss, MaskedMaskLoss, coarse_pseudo_labels, decoder_pseudo_masks
from medsam_kit.methods.sss.teacher import EMATeacher, ema_momentum
from medsam_kit.methods.sss.views import (
    StrongParams,
    apply_cutmix,
    cutmix_boxes,
    gaussian_blur,
    step_generator,
    strong_view,
    weak_view,
)

__all__ = [
    "DFE",
    "EMATeacher",
    "MaskedCoarseLoss",
    "MaskedMaskLoss",
    "PcswCache",
    "PseudoLabelCalibration",
    "SSSMethod",
    "SSSParams",
    "StrongParams",
    "VolumePrompt",
    "apply_cutmix",
    "coarse_class_volume",
    "coarse_pseudo_labels",
    "crop_prompts",
    "cutmix_boxes",
    "decoder_pseudo_masks",
    "ema_momentum",
    "feature_widths",
    "gaussian_blur",
    "step_generator",
    "strong_view",
    "weak_view",
]
