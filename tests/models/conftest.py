"""Fixtures for model tests: tiny registry models with every parameter random (none left at zero)."""

from __future__ import annotations

import pytest
import torch


def fill_zero_parameters(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give every all-zero parameter (position tables, memory tokens...) random values, in place.

    Official init leaves several tensors at zero; a test comparing two code paths must not pass
    only because a prompt or position term is multiplied by zero.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


@pytest.fixture
def tiny_model():
    """``tiny_model(name, seed=0, **load_model_kwargs)`` -> a tiny model with all parameters random."""
    from medsam_kit.models import load_model

    def make(name: str, seed: int = 0, **kwargs):
        torch.manual_seed(seed)
        return fill_zero_parameters(load_model(name, **kwargs), seed)

    return make
