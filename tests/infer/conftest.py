"""Fixtures for inference tests: a deterministic stub model and tiny random-init SAM models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_kit.models.segmenter_model import DecoderOutput, Features


class StubModel:
    """Model with the SegmenterModel contract whose outputs are known exactly.

    ``encode`` keeps the image itself as the "embedding"; ``decode`` returns +10 logits on pixels
    inside the (inclusive-corner) box whose intensity is > 0.5, -10 elsewhere; ``coarse_logits``
    gives class 1 where the intensity is > 0.5. Counts encoder and decoder calls.
    """

    def __init__(self, image_size: int = 64, num_classes: int = 1, in_channels: int = 1) -> None:
        self.image_size, self.num_classes, self.in_channels = image_size, num_classes, in_channels
        self.encode_calls = 0
        self.encoded_images = 0
        self.decoded_boxes: list[np.ndarray] = []

    def encode(self, images: torch.Tensor) -> Features:
        assert images.shape[1:] == (self.in_channels, self.image_size, self.image_size)
        self.encode_calls += 1
        self.encoded_images += len(images)
        return Features(images.clone())

    def decode(self, features, boxes=None, points=None, point_labels=None, mask_inputs=None, multimask_output=False):
        image = features.image_embed[:, :1]
        s = self.image_size
        rows = torch.arange(s).view(1, s, 1).float()
        cols = torch.arange(s).view(1, 1, s).float()
        inside = torch.ones_like(image[:, 0], dtype=torch.bool)
        if boxes is not None:
            self.decoded_boxes.extend(boxes.numpy())
            x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
            inside = (cols >= x0 - 0.5) & (cols <= x1 + 0.5) & (rows >= y0 - 0.5) & (rows <= y1 + 0.5)
        logits = torch.where(inside[:, None] & (image > 0.5), 10.0, -10.0)
        low = torch.nn.functional.interpolate(logits, size=(s // 4, s // 4), mode="bilinear")
        return DecoderOutput(logits, torch.ones(len(image), 1), low, None)

    def coarse_logits(self, features):
        image = features.image_embed[:, :1]
        foreground = torch.where(image > 0.5, 10.0, -10.0)
        return torch.cat([-foreground] + [foreground if k == 1 else -10 * torch.ones_like(image)
                                          for k in range(1, self.num_classes + 1)], dim=1)


@pytest.fixture
def stub_model():
    return StubModel


@pytest.fixture(scope="session")
def tiny_sam():
    """``tiny_sam(name) -> SegmenterModel``: tiny random-init model (1 channel, 3 classes), cached per session."""
    from medsam_kit.models import load_model

    cache = {}

    def make(name: str = "sam_vit_tiny_test", num_classes: int = 3):
        key = (name, num_classes)
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = load_model(name, in_channels=1, num_classes=num_classes)
        return cache[key]

    return make


