"""Supervised training: coarse head Dice + CE on the full label, decoder BCE + Dice from GT prompts.

For a batch of ``B`` slices with labels ``0..K`` (``K = model.num_classes``, label values
contiguous), each slice is encoded once. The coarse head is trained on the whole label map. The
mask decoder gets one prompt per (slice, class present on the slice): a jittered box derived from
the ground truth (:func:`medsam_kit.prompts.batch_prompts_from_labels`, end-exclusive boxes turned
into the decoder's inclusive corner pixels) plus, for a random ``1 - point_dropout`` share of the
prompts, positive interior points; its target is that class's binary mask. At most
``max_prompts`` pairs per micro-batch are decoded (chosen at random) to bound the cost.

Randomness (prompt jitter, the choice of pairs, point dropout) comes from one generator seeded by
``(seed, step)``, so a resumed run draws the same prompts as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medsam_kit.engine.losses import CoarseLoss, MaskLoss
from medsam_kit.methods.base import TrainingMethod
from medsam_kit.prompts import MaskPromptConfig, batch_prompts_from_labels


def inclusive_pixel_boxes(boxes: np.ndarray, image_size: int) -> np.ndarray:
    """End-exclusive boxes ``(P, 4)`` ``(x0, y0, x1, y1)`` -> the decoder's inclusive corner pixels.

    As :meth:`medsam_kit.prompts.BoxPrompt.to_inclusive_pixels`, vectorised and clipped to the
    ``image_size`` x ``image_size`` input; float64 ``(P, 4)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    inclusive = np.stack(
        [np.floor(boxes[:, 0]), np.floor(boxes[:, 1]), np.ceil(boxes[:, 2]) - 1, np.ceil(boxes[:, 3]) - 1], axis=1
    )
    return np.clip(inclusive, 0, image_size - 1)


@dataclass
class SupervisedParams:
    """Keys of the config's ``method`` section for ``name: supervised``.

    Attributes:
        coarse_weight, decoder_weight: weights of the two losses in the total.
        dice_weight, ce_weight: Dice vs (B)CE weight inside each loss.
        box_jitter_px, box_jitter_frac: per-coordinate box jitter bound ``px + frac * side``.
        n_positive: positive points per prompt (0: boxes only).
        point_dropout: share of prompts whose points are dropped (box only), so the decoder learns both.
        max_prompts: at most this many (slice, class) prompts decoded per micro-batch.
        seed: base seed of the prompt generator.
        coarse_batch_dice: the coarse head's Dice per class over the micro-batch, not per slice
            (:class:`~medsam_kit.engine.losses.CoarseLoss`).
    """

    coarse_weight: float = 1.0
    decoder_weight: float = 1.0
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    box_jitter_px: float = 2.0
    box_jitter_frac: float = 0.05
    n_positive: int = 1
    point_dropout: float = 0.5
    max_prompts: int = 16
    seed: int = 0
    coarse_batch_dice: bool = False


class SupervisedMethod(TrainingMethod):
    """Strategy object for :class:`medsam_kit.engine.trainer.Trainer` (see module docstring).

    Stateless: only :meth:`loss` (the other hooks keep :class:`~medsam_kit.methods.base.TrainingMethod`'s
    defaults: no setup, no parameters of its own, nothing to save for a resume).
    """

    name = "supervised"

    def __init__(self, params: SupervisedParams | None = None) -> None:
        self.params = params or SupervisedParams()
        p = self.params
        self.coarse_loss = CoarseLoss(p.dice_weight, p.ce_weight, p.coarse_batch_dice)
        self.mask_loss = MaskLoss(p.dice_weight, p.ce_weight)
        self.prompt_config = MaskPromptConfig(
            box=True, jitter_px=p.box_jitter_px, jitter_frac=p.box_jitter_frac, n_positive=p.n_positive
        )

    def loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one micro-batch.

        Args:
            model: a :class:`~medsam_kit.models.SegmenterModel`.
            batch: ``image`` ``(B, C, S, S)`` float in ``[0, 1]`` and ``label`` ``(B, S, S)`` int64
                in ``0..K``, both on the model's device.
            step: index of this micro-batch since the start of training (seeds the prompts).

        Returns:
            ``(loss, logs)``; logs hold ``loss``, ``coarse_loss``, ``decoder_loss``, ``prompts``.
        """
        p = self.params
        images, labels = batch["image"], batch["label"]
        features = model.encode(images)
        coarse = self.coarse_loss(model.coarse_logits(features), labels)
        total = p.coarse_weight * coarse
        logs = {"coarse_loss": float(coarse.detach())}

        rng = np.random.default_rng((p.seed, int(step)))
        prompts = self.prompts(labels.cpu().numpy(), model.num_classes, model.image_size, rng)
        if prompts is not None:
            index, class_values, boxes, points, point_labels = (
                None if t is None else t.to(images.device) for t in prompts
            )
            out = model.decode(features.select(index), boxes=boxes, points=points, point_labels=point_labels)
            targets = labels[index] == class_values[:, None, None]
            decoder = self.mask_loss(out.mask_logits[:, :1], targets)
            total = total + p.decoder_weight * decoder
            logs["decoder_loss"] = float(decoder.detach())
            logs["prompts"] = float(len(index))
        else:  # no foreground in the batch: only the coarse head learns (background)
            logs["decoder_loss"] = 0.0
            logs["prompts"] = 0.0
        logs["loss"] = float(total.detach())
        return total, logs

    def prompts(self, labels: np.ndarray, num_classes: int, image_size: int, rng: np.random.Generator):
        """GT prompts for ``labels`` ``(B, S, S)``: ``(index, class, boxes, points, point_labels)`` tensors.

        ``index`` ``(P,)`` slice of each prompt, ``class`` ``(P,)`` its label value, ``boxes``
        ``(P, 4)`` inclusive corners ``(x0, y0, x1, y1)`` clipped to the image, ``points``
        ``(P, N, 2)`` / ``point_labels`` ``(P, N)`` (or None when ``n_positive`` is 0). None when
        no class is present on any slice.
        """
        p = self.params
        classes = list(range(1, num_classes + 1))
        batch = batch_prompts_from_labels(labels, classes, self.prompt_config, rng)
        slices, cls = np.nonzero(batch.valid)
        if len(slices) == 0:
            return None
        if len(slices) > p.max_prompts:
            keep = np.sort(rng.choice(len(slices), p.max_prompts, replace=False))
            slices, cls = slices[keep], cls[keep]
        inclusive = inclusive_pixel_boxes(batch.boxes[slices, cls], image_size)
        tensors = [
            torch.from_numpy(slices.astype(np.int64)),
            torch.tensor([classes[c] for c in cls], dtype=torch.int64),
            torch.from_numpy(inclusive.astype(np.float32)),
        ]
        if p.n_positive > 0:
            coords = batch.point_coords[slices, cls]
            point_labels = batch.point_labels[slices, cls].copy()
            drop = rng.random(len(slices)) < p.point_dropout
            point_labels[drop] = -1  # SAM's padding label: the prompt is the box alone
            tensors += [torch.from_numpy(coords), torch.from_numpy(point_labels)]
        else:
            tensors += [None, None]
        return tensors
