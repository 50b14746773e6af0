"""Supervised method: GT prompts in the decoder's inclusive convention, losses, gradients, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_kit.methods import SupervisedMethod, SupervisedParams, get_method, list_methods, method_params
from medsam_kit.models import load_model
from medsam_kit.prompts import box_from_mask


def _labels() -> np.ndarray:
    labels = np.zeros((2, 32, 32), np.int64)
    labels[0, 4:10, 6:20] = 1  # rows 4..9, columns 6..19
    labels[0, 20:30, 20:25] = 2
    labels[1, 0:5, 27:32] = 2  # touches the image border
    return labels


def test_prompts_inclusive_boxes_without_jitter():
    method = SupervisedMethod(SupervisedParams(box_jitter_px=0, box_jitter_frac=0, n_positive=0))
    index, cls, boxes, points, point_labels = method.prompts(_labels(), 2, 32, np.random.default_rng(0))
    assert index.tolist() == [0, 0, 1] and cls.tolist() == [1, 2, 2]
    assert boxes.tolist() == [[6, 4, 19, 9], [20, 20, 24, 29], [27, 0, 31, 4]]
    assert points is None and point_labels is None
    # Same as BoxPrompt.to_inclusive_pixels of the end-exclusive GT box.
    assert list(box_from_mask(_labels()[0] == 1).to_inclusive_pixels()) == boxes[0].tolist()


def test_prompts_jitter_points_and_cap():
    method = SupervisedMethod(SupervisedParams(box_jitter_px=3, n_positive=2, point_dropout=0.5, max_prompts=2))
    index, cls, boxes, points, point_labels = method.prompts(_labels(), 2, 32, np.random.default_rng(1))
    assert len(index) == 2 and points.shape == (2, 2, 2) and point_labels.shape == (2, 2)
    assert boxes.min() >= 0 and boxes.max() <= 31
    assert set(point_labels.flatten().tolist()) <= {-1, 1}
    again = method.prompts(_labels(), 2, 32, np.random.default_rng(1))
    assert all(torch.equal(a, b) for a, b in zip((index, cls, boxes, points, point_labels), again, strict=True))
    empty = method.prompts(np.zeros((2, 32, 32), np.int64), 2, 32, np.random.default_rng(0))
    assert empty is None


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("sam2.1_hiera_tiny_test", image_size=64, in_channels=1, num_classes=2).train()


def test_loss_logs_gradients_and_determinism(model):
    labels = np.zeros((2, 64, 64), np.int64)
    labels[:, 10:30, 10:40] = 1
    labels[1, 40:60, 40:60] = 2
    batch = {"image": torch.rand(2, 1, 64, 64), "label": torch.from_numpy(labels)}
    method = get_method("supervised", max_prompts=8)
    model.zero_grad()
    loss, logs = method.loss(model, batch, step=5)
    assert set(logs) == {"loss", "coarse_loss", "decoder_loss", "prompts"}
    assert logs["prompts"] == 3.0
    assert logs["loss"] == pytest.approx(logs["coarse_loss"] + logs["decoder_loss"], rel=1e-6)
    loss.backward()
    decoder_grad = sum(p.grad.abs().sum() for p in model.sam.sam_mask_decoder.parameters() if p.grad is not None)
    head_grad = sum(p.grad.abs().sum() for p in model.coarse_head.parameters() if p.grad is not None)
    assert decoder_grad > 0 and head_grad > 0
    again, _ = method.loss(model, batch, step=5)
    assert again.item() == loss.item()  # prompts seeded by the step


def test_background_only_batch_trains_coarse_head(model):
    batch = {"image": torch.rand(1, 1, 64, 64), "label": torch.zeros(1, 64, 64, dtype=torch.int64)}
    loss, logs = SupervisedMethod().loss(model, batch, 0)
    assert logs["prompts"] == 0.0 and logs["decoder_loss"] == 0.0
    assert loss.item() == pytest.approx(logs["coarse_loss"])


def test_registry():
    assert list_methods() == ["sss", "supervised"]
    assert method_params({"name": "supervised", "coarse_weight": 2}).coarse_weight == 2
    with pytest.raises(ValueError, match="unknown method 'fixmatch'"):
        get_method("fixmatch")
