"""Fixtures for method tests: a :class:`~medsam_kit.methods.TrainContext` as the Trainer hands ``SSSMethod.setup``."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from medsam_kit.engine.augment import AugmentParams, SpatialAugment
from medsam_kit.methods import TrainContext


def object_volume(shape=(6, 80, 80), classes=((1, (1, 5), (20, 44), (24, 52)), (2, (2, 6), (50, 70), (10, 30)))):
    """``(Z, Y, X)`` uint8 labels: per class a box-shaped object ``(cls, (z0, z1), (y0, y1), (x0, x1))``."""
    labels = np.zeros(shape, np.uint8)
    for cls, (z0, z1), (y0, y1), (x0, x1) in classes:
        labels[z0:z1, y0:y1, x0:x1] = cls
    return labels


@pytest.fixture
def fake_context():
    """``fake_context(image_size=64, num_classes=2, cases=2, **train) -> TrainContext`` as a set-up Trainer builds.

    Unlabeled cases ``u0``, ``u1``: ``(1, 6, 80, 80)`` images in ``[0, 1]`` showing the objects of
    :func:`object_volume` over noise; intensity mapping identity; augment = the trainer's default warps.
    """

    def make(image_size=64, num_classes=2, cases=2, grad_accumulation=1, val_batch_size=8, steps=100):
        from medsam_kit.models import load_model

        torch.manual_seed(0)
        model = load_model("sam2.1_hiera_tiny_test", image_size=image_size, in_channels=1, num_classes=num_classes,
                           decoder_postprocessing=False).train()
        rng = np.random.default_rng(0)
        volumes = []
        for i in range(cases):
            image = 0.2 + 0.3 * object_volume().astype(np.float32) + 0.05 * rng.standard_normal((6, 80, 80))
            volumes.append(types.SimpleNamespace(case_id=f"u{i}", image=image.clip(0, 1)[None].astype(np.float32)))
        augment = SpatialAugment(AugmentParams(probability=0.8, rotate_deg=15, scale=(0.85, 1.2), translate=0.1), 0.0)
        labeled = [types.SimpleNamespace(case_id="l0", image=volumes[0].image, label=object_volume())]
        return TrainContext(model=model, device=torch.device("cpu"), train_cases=labeled, unlabeled_cases=volumes,
                            class_values=tuple(range(1, num_classes + 1)), label_lut=torch.arange(num_classes + 1),
                            intensity={"kind": "identity"}, augment=augment, steps=steps,
                            grad_accumulation=grad_accumulation, val_batch_size=val_batch_size)

    return make
