"""One segmentation model for both SAM families: encoder, coarse head, prompt encoder, mask decoder.

Coordinates and shapes (the same for SAM-1 and SAM-2):

* ``S`` = ``image_size``. Images are ``(B, C, S, S)`` float tensors, channels first, rows then
  columns; intensities scaled to ``[0, 1]`` per channel (SAM's RGB/255 convention). The model
  normalises them with ``pixel_mean`` / ``pixel_std`` from its config. Resizing a slice to ``S`` is
  the caller's job (inference and samplers do it), so prompts are always in model-input pixels.
* Prompts are in pixels of the model input, **(x, y) = (column, row)**, as in SAM: a point
  ``(x, y)`` is pixel ``image[..., y, x]``; a box is ``(x0, y0, x1, y1)`` with the inclusive corner
  pixels (SAM's prompt encoder adds 0.5 to reach pixel centres). ``point_labels``: 1 positive,
  0 negative, -1 padding.
* One prompt -> one mask: ``decode`` pairs item ``b`` of the features with prompt ``b``. For several
  objects on one image, repeat the features (:meth:`Features.repeat_interleave`).
* Low-resolution mask logits are ``(B, M, S/4, S/4)``; full-resolution ones ``(B, M, S, S)``
  (bilinear upsampling, as both official predictors do).

Preprocessing and prompt handling follow ``SAM2ImagePredictor`` and ``SamPredictor`` exactly
(``tests/models/test_equivalence.py`` compares the masks).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medsam_kit.models.channels import IMAGENET_MEAN, IMAGENET_STD, adapt_patch_embedding
from medsam_kit.models.heads import CoarseHead


@dataclass
class Features:
    """Encoder output for a batch of ``B`` images.

    Attributes:
        image_embed: ``(B, D, S/16, S/16)`` stride-16 embedding the decoder attends to. For SAM-2 it
            already includes ``no_mem_embed`` (as ``SAM2ImagePredictor.set_image`` does); memory-
            conditioned tracking starts from ``image_embed - sam.no_mem_embed``.
        high_res: SAM-2 only: ``((B, D/8, S/4, S/4), (B, D/4, S/8, S/8))`` maps already projected by
            the decoder's ``conv_s0`` / ``conv_s1``; empty for SAM-1.
    """

    image_embed: torch.Tensor
    high_res: tuple[torch.Tensor, ...] = ()

    def __len__(self) -> int:
        return self.image_embed.shape[0]

    def _map(self, fn) -> Features:
        return Features(fn(self.image_embed), tuple(fn(t) for t in self.high_res))

    def select(self, index: int | slice | torch.Tensor) -> Features:
        """Items ``index`` (an int keeps a batch axis of 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def repeat_interleave(self, repeats: int | torch.Tensor) -> Features:
        """Each item repeated ``repeats`` times along the batch axis (several prompts per image)."""
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def to(self, device: torch.device | str) -> Features:
        return self._map(lambda t: t.to(device))

    def detach(self) -> Features:
        return self._map(lambda t: t.detach())

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors (for bounded embedding caches)."""
        return sum(t.numel() * t.element_size() for t in (self.image_embed, *self.high_res))


class DecoderOutput(NamedTuple):
    """Mask decoder results for ``B`` prompts, ``M`` masks each (1 unless ``multimask_output``).

    Attributes:
        mask_logits: ``(B, M, S, S)`` logits at the model input size.
        iou_predictions: ``(B, M)`` predicted IoU of each mask.
        low_res_logits: ``(B, M, S/4, S/4)``; can be fed back as ``mask_inputs``.
        object_score_logits: ``(B, 1)`` SAM-2 "object present" logits; None for SAM-1.
    """

    mask_logits: torch.Tensor
    iou_predictions: torch.Tensor
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor | None


class SegmenterModel(nn.Module):
    """SAM image encoder + coarse semantic head + SAM prompt encoder and mask decoder.

    Build through :func:`medsam_kit.models.load_model`; the constructor wraps an already built
    official module. ``config`` (plain data, see :mod:`medsam_kit.models.factory`) describes the
    network completely and is stored in checkpoints and run folders.

    Attributes:
        sam: the official ``SAM2Base`` or ``segment_anything.Sam`` (keys as in official checkpoints).
        coarse_head: :class:`~medsam_kit.models.heads.CoarseHead`.
        feature_fusers: modules called as ``features = fuser(images, features)`` at the end of
            :meth:`encode` (expert branches; empty unless an adapter adds one).
    """

    def __init__(self, sam: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.family: str = config["family"]
        self.image_size: int = config["image_size"]
        self.in_channels: int = config["in_channels"]
        self.num_classes: int = config["num_classes"]
        if self.family not in ("sam2", "sam"):
            raise ValueError(f"unknown model family {self.family!r}; expected 'sam2' or 'sam'")
        self.sam = sam
        mean, std = config["pixel_mean"], config["pixel_std"]
        if len(mean) != self.in_channels or len(std) != self.in_channels:
            raise ValueError(f"pixel_mean / pixel_std need {self.in_channels} values each, got {mean} / {std}")
        # Non-persistent: the config is the source of truth, so state dicts stay official-shaped.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

        embed_path = self._patch_embed_path()
        conv = sam.get_submodule(embed_path)
        if conv.in_channels != self.in_channels:
            parent, _, name = embed_path.rpartition(".")
            setattr(
                sam.get_submodule(parent),
                name,
                adapt_patch_embedding(conv, self.in_channels, IMAGENET_MEAN, IMAGENET_STD, mean, std),
            )
        self.embed_dim: int = sam.hidden_dim if self.family == "sam2" else sam.prompt_encoder.embed_dim
        head = config.get("coarse_head", {})
        self.coarse_head = CoarseHead(self.embed_dim, self.num_classes, use_high_res=bool(head.get("use_high_res")))
        self.feature_fusers = nn.ModuleList()

    # ------------------------------------------------------------------ structure
    def _patch_embed_path(self) -> str:
        return "image_encoder.trunk.patch_embed.proj" if self.family == "sam2" else "image_encoder.patch_embed.proj"

    @property
    def patch_embedding(self) -> nn.Conv2d:
        """The image encoder's first convolution, weight ``(D, C, k, k)`` (C = ``in_channels``)."""
        return self.sam.get_submodule(self._patch_embed_path())

    @property
    def encoder_blocks(self) -> nn.ModuleList:
        """The image encoder's transformer blocks (Hiera ``MultiScaleBlock`` / ViT ``Block``), for adapters."""
        encoder = self.sam.image_encoder
        return encoder.trunk.blocks if self.family == "sam2" else encoder.blocks

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part, for freezing and per-part learning rates; every parameter appears once.

        Keys: ``image_encoder``, ``prompt_encoder``, ``mask_decoder``, ``coarse_head``,
        ``feature_fusers``; for SAM-2 also ``memory`` (memory attention / encoder, memory and
        object-pointer tokens: the parts SAM-2 uses across slices); ``other`` for anything an
        adapter added elsewhere (absent when empty).
        """
        sam = self.sam
        if self.family == "sam2":
            prompt_encoder, mask_decoder = sam.sam_prompt_encoder, sam.sam_mask_decoder
        else:
            prompt_encoder, mask_decoder = sam.prompt_encoder, sam.mask_decoder
        modules = {
            "image_encoder": sam.image_encoder,
            "prompt_encoder": prompt_encoder,
            "mask_decoder": mask_decoder,
            "coarse_head": self.coarse_head,
            "feature_fusers": self.feature_fusers,
        }
        groups = {name: list(module.parameters()) for name, module in modules.items()}
        seen = {id(p) for params in groups.values() for p in params}
        if self.family == "sam2":
            groups["memory"] = [p for p in sam.parameters() if id(p) not in seen]
            seen.update(id(p) for p in groups["memory"])
        other = [p for p in self.parameters() if id(p) not in seen]
        if other:
            groups["other"] = other
        return groups

    # ------------------------------------------------------------------ encoder
    def encode(self, images: torch.Tensor) -> Features:
        """Encode ``images`` ``(B, C, S, S)`` in ``[0, 1]`` (see module docstring) into :class:`Features`."""
        if images.ndim != 4 or images.shape[1] != self.in_channels or images.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), got "
                f"{tuple(images.shape)}; resize slices to the model's image_size and stack channels first"
            )
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        if self.family == "sam2":
            features = self._encode_sam2(x)
        else:
            features = Features(self.sam.image_encoder(x))
        for fuser in self.feature_fusers:
            features = fuser(images, features)
        return features

    def _encode_sam2(self, x: torch.Tensor) -> Features:
        # Same steps as SAM2ImagePredictor.set_image, with the feature sizes read from the maps.
        sam = self.sam
        backbone_out = sam.forward_image(x)
        _, vision_feats, _, feat_sizes = sam._prepare_backbone_features(backbone_out)
        if sam.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + sam.no_mem_embed
        batch = x.shape[0]
        maps = [f.permute(1, 2, 0).reshape(batch, -1, h, w) for f, (h, w) in zip(vision_feats, feat_sizes, strict=True)]
        return Features(maps[-1], tuple(maps[:-1]))

    # ------------------------------------------------------------------ heads
    def coarse_logits(self, features: Features) -> torch.Tensor:
        """Prompt-free class logits ``(B, K + 1, S, S)``; channel 0 is background."""
        logits = self.coarse_head(features.image_embed, features.high_res)
        return F.interpolate(logits, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)

    def decode(
        self,
        features: Features,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> DecoderOutput:
        """Masks for one prompt per item of ``features`` (``B`` items, ``B`` prompts).

        Args:
            features: from :meth:`encode`, batch ``B``.
            boxes: ``(B, 4)`` float ``(x0, y0, x1, y1)`` in model-input pixels, or None.
            points: ``(B, N, 2)`` float ``(x, y)`` in model-input pixels, or None.
            point_labels: ``(B, N)`` int, 1 positive / 0 negative / -1 padding; required with points.
            mask_inputs: ``(B, 1, S/4, S/4)`` mask logits (e.g. a previous ``low_res_logits``); other
                sizes are resized (bilinear, antialiased), as SAM-2 does.
            multimask_output: return SAM's 3 candidate masks instead of one.

        Returns:
            :class:`DecoderOutput`; in eval mode a SAM-2 single mask falls back to the most stable
            candidate when it is unstable (official post-processing setting).
        """
        batch = len(features)
        device = features.image_embed.device
        boxes, points, point_labels, mask_inputs = self._check_prompts(batch, boxes, points, point_labels, mask_inputs)
        if mask_inputs is not None:
            low_res_size = (self.image_size // 4,) * 2
            if tuple(mask_inputs.shape[-2:]) != low_res_size:
                mask_inputs = F.interpolate(
                    mask_inputs.float(), size=low_res_size, mode="bilinear", align_corners=False, antialias=True
                )
        if self.family == "sam2":
            low, iou, obj = self._decode_sam2(
                features, boxes, points, point_labels, mask_inputs, multimask_output, device
            )
        else:
            low, iou, obj = self._decode_sam1(features, boxes, points, point_labels, mask_inputs, multimask_output)
        low = low.float()
        masks = F.interpolate(low, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return DecoderOutput(masks, iou, low, obj)

    def _check_prompts(self, batch, boxes, points, point_labels, mask_inputs):
        if boxes is not None and tuple(boxes.shape) != (batch, 4):
            raise ValueError(f"boxes must be (B, 4) = ({batch}, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        if (points is None) != (point_labels is None):
            raise ValueError("points and point_labels go together: pass both or neither")
        if points is not None:
            if points.ndim != 3 or points.shape[0] != batch or points.shape[2] != 2:
                raise ValueError(f"points must be (B, N, 2) = ({batch}, N, 2) as (x, y), got {tuple(points.shape)}")
            if tuple(point_labels.shape) != tuple(points.shape[:2]):
                raise ValueError(
                    f"point_labels must be (B, N) = {tuple(points.shape[:2])}, got {tuple(point_labels.shape)}"
                )
            points, point_labels = points.float(), point_labels.int()
        if mask_inputs is not None and (mask_inputs.ndim != 4 or tuple(mask_inputs.shape[:2]) != (batch, 1)):
            raise ValueError(f"mask_inputs must be (B, 1, H, W) with B = {batch}, got {tuple(mask_inputs.shape)}")
        return (boxes.float() if boxes is not None else None), points, point_labels, mask_inputs

    def _decode_sam2(self, features, boxes, points, point_labels, mask_inputs, multimask_output, device):
        # As SAM2ImagePredictor._predict: the box enters as two corner points labelled 2 and 3, first.
        sam = self.sam
        batch = len(features)
        concat = (points, point_labels) if points is not None else None
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(batch, 1)
            if concat is not None:
                concat = (torch.cat([box_coords, concat[0]], dim=1), torch.cat([box_labels, concat[1]], dim=1))
            else:
                concat = (box_coords, box_labels)
        if concat is None:
            # No sparse prompt: one padding point, as SAM2Base._forward_sam_heads does in training.
            concat = (torch.zeros(batch, 1, 2, device=device), -torch.ones(batch, 1, dtype=torch.int, device=device))
        sparse, dense = sam.sam_prompt_encoder(points=concat, boxes=None, masks=mask_inputs)
        low, iou, _, obj = sam.sam_mask_decoder(
            image_embeddings=features.image_embed,
            image_pe=sam.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,  # one prompt per image, already paired
            high_res_features=list(features.high_res) if features.high_res else None,
        )
        return low, iou, obj

    def _decode_sam1(self, features, boxes, points, point_labels, mask_inputs, multimask_output):
        # segment_anything's decoder repeats one image embedding over all prompts in its batch, so a
        # batch of (image, prompt) pairs is decoded pair by pair, each as SamPredictor.predict_torch does.
        sam = self.sam
        lows, ious = [], []
        for b in range(len(features)):
            item = slice(b, b + 1)
            sparse, dense = sam.prompt_encoder(
                points=(points[item], point_labels[item]) if points is not None else None,
                boxes=boxes[item] if boxes is not None else None,
                masks=mask_inputs[item] if mask_inputs is not None else None,
            )
            low, iou = sam.mask_decoder(
                image_embeddings=features.image_embed[item],
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            lows.append(low)
            ious.append(iou)
        return torch.cat(lows), torch.cat(ious), None

    def forward(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> dict[str, torch.Tensor | None]:
        """Encode, coarse head, and (when any prompt is given) decode one prompt per image.

        Returns:
            ``{"coarse_logits": (B, K+1, S, S)}`` plus, with prompts, the :class:`DecoderOutput`
            fields ``mask_logits``, ``iou_predictions``, ``low_res_logits``, ``object_score_logits``.
        """
        features = self.encode(images)
        out: dict[str, torch.Tensor | None] = {"coarse_logits": self.coarse_logits(features)}
        if boxes is not None or points is not None or mask_inputs is not None:
            out.update(self.decode(features, boxes, points, point_labels, mask_inputs, multimask_output)._asdict())
        return out


def combine_class_masks(class_logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Label map from per-class decoder logits.

    Args:
        class_logits: ``(B, K, H, W)`` one decoder mask per foreground class (class k+1 in channel k).
        threshold: logit above which a pixel belongs to a class.

    Returns:
        ``(B, H, W)`` int64 labels: ``1 + argmax_k`` where the best logit exceeds ``threshold``, else 0.
    """
    best, index = class_logits.max(dim=1)
    return torch.where(best > threshold, index + 1, torch.zeros_like(index))
