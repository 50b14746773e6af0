"""The C-channel patch-embedding rule: a grey input gives the RGB model's activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsam_kit.models import IMAGENET_MEAN, IMAGENET_STD, adapt_patch_embedding, default_normalization, load_model


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@pytest.mark.parametrize("in_channels", [1, 2, 4])
@pytest.mark.parametrize("kernel,stride,padding", [(16, 16, 0), (7, 4, 3)])  # SAM-1 ViT / SAM-2 Hiera
def test_grey_input_gives_the_rgb_activations(in_channels, kernel, stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 24, kernel, stride=stride, padding=padding)
    mean, std = default_normalization(in_channels)
    adapted = adapt_patch_embedding(conv, in_channels, IMAGENET_MEAN, IMAGENET_STD, mean, std)
    assert adapted.weight.shape == (24, in_channels, kernel, kernel)
    for value in (0.0, 0.37, 1.0):
        grey = torch.full((1, 1, 64, 64), value)
        rgb_out = conv(_normalise(grey.expand(1, 3, 64, 64), IMAGENET_MEAN, IMAGENET_STD))
        new_out = adapted(_normalise(grey.expand(1, in_channels, 64, 64), mean, std))
        inner = slice(1, -1) if padding else slice(None)  # border tokens see the zero padding
        torch.testing.assert_close(new_out[..., inner, inner], rgb_out[..., inner, inner], rtol=1e-5, atol=1e-5)


def test_rule_reduces_to_mean_times_three_over_c_for_uniform_normalisation():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 4, stride=4)
    uniform_mean, uniform_std = [0.5] * 3, [0.25] * 3
    adapted = adapt_patch_embedding(conv, 4, uniform_mean, uniform_std, [0.5] * 4, [0.25] * 4)
    expected = conv.weight.mean(dim=1, keepdim=True).expand(-1, 4, -1, -1) * 3 / 4
    torch.testing.assert_close(adapted.weight, expected)
    torch.testing.assert_close(adapted.bias, conv.bias)


def test_default_normalisation():
    assert default_normalization(3) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    mean, std = default_normalization(4)
    assert mean == [pytest.approx(0.449)] * 4 and std == [pytest.approx(0.226)] * 4


@pytest.mark.parametrize("in_channels", [1, 4])
def test_sam1_model_on_constant_image_matches_rgb_model(tmp_path, tiny_model, in_channels):
    """Whole SAM-1 encoder: C-channel model built from the RGB checkpoint == RGB model on the grey image."""
    rgb = tiny_model("sam_vit_tiny_test")
    path = tmp_path / "rgb.pth"
    torch.save(rgb.sam.state_dict(), path)  # official SAM-1 layout
    multi = load_model("sam_vit_tiny_test", checkpoint=path, in_channels=in_channels)
    value = 0.6
    with torch.no_grad():
        rgb_embed = rgb.encode(torch.full((1, 3, 128, 128), value)).image_embed
        multi_embed = multi.encode(torch.full((1, in_channels, 128, 128), value)).image_embed
    torch.testing.assert_close(multi_embed, rgb_embed, rtol=1e-4, atol=1e-4)
    # The kernel really came from the file, not from a random init.
    assert not torch.allclose(
        multi.sam.image_encoder.patch_embed.proj.weight,
        load_model("sam_vit_tiny_test", in_channels=in_channels).sam.image_encoder.patch_embed.proj.weight,
    )


@pytest.mark.parametrize("in_channels", [1, 4])
def test_sam2_patch_embedding_on_constant_image_matches_rgb_model(tmp_path, tiny_model, in_channels):
    rgb = tiny_model("sam2.1_hiera_tiny_test")
    path = tmp_path / "rgb.pt"
    torch.save({"model": rgb.sam.state_dict()}, path)  # official SAM-2 layout
    multi = load_model("sam2.1_hiera_tiny_test", checkpoint=path, in_channels=in_channels)
    value = 0.3
    with torch.no_grad():
        x_rgb = (torch.full((1, 3, 128, 128), value) - rgb.pixel_mean) / rgb.pixel_std
        x_multi = (torch.full((1, in_channels, 128, 128), value) - multi.pixel_mean) / multi.pixel_std
        rgb_tokens = rgb.sam.image_encoder.trunk.patch_embed(x_rgb)  # (1, 32, 32, D)
        multi_tokens = multi.sam.image_encoder.trunk.patch_embed(x_multi)
    torch.testing.assert_close(multi_tokens[:, 1:-1, 1:-1], rgb_tokens[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert F.l1_loss(multi_tokens, rgb_tokens) < 0.05 * rgb_tokens.abs().mean()  # borders differ only slightly


def test_three_channels_keep_the_file_kernel(tmp_path, tiny_model):
    rgb = tiny_model("sam_vit_tiny_test")
    path = tmp_path / "rgb.pth"
    torch.save(rgb.sam.state_dict(), path)
    again = load_model("sam_vit_tiny_test", checkpoint=path)
    assert torch.equal(again.sam.image_encoder.patch_embed.proj.weight, rgb.sam.image_encoder.patch_embed.proj.weight)
