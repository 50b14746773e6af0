"""Registry: names, builders, forward shapes of the tiny variants, config as data, errors."""

from __future__ import annotations

import json

import pytest
import torch

from medsam_kit.models import combine_class_masks, list_models, load_model, model_from_config

TINY_MODELS = ("sam2.1_hiera_tiny_test", "sam_vit_tiny_test")
EXPECTED_NAMES = {
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
    "sam2.1_hiera_tiny_test",
    "sam_vit_b",
    "sam_vit_l",
    "sam_vit_h",
    "sam_vit_tiny_test",
}


def test_list_models_lists_every_name():
    assert set(list_models()) == EXPECTED_NAMES
    assert list_models() == sorted(list_models())


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown model 'sam3'.*sam2\.1_hiera_tiny.*sam_vit_b"):
        load_model("sam3")


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("in_channels", [1, 3, 4])
@pytest.mark.parametrize("image_size", [128, 256])
def test_tiny_forward_shapes(tiny_model, name, in_channels, image_size):
    model = tiny_model(name, image_size=image_size, in_channels=in_channels, num_classes=3)
    batch, s = 2, image_size
    images = torch.rand(batch, in_channels, s, s)
    with torch.no_grad():
        features = model.encode(images)
        coarse = model.coarse_logits(features)
        single = model.decode(features, boxes=torch.tensor([[10.0, 12.0, 60.0, 70.0]] * batch))
        multi = model.decode(
            features,
            points=torch.tensor([[[30.0, 40.0], [5.0, 5.0]]] * batch),
            point_labels=torch.tensor([[1, 0]] * batch),
            multimask_output=True,
        )
        refined = model.decode(features, mask_inputs=single.low_res_logits)
    d = model.embed_dim
    assert features.image_embed.shape == (batch, d, s // 16, s // 16)
    if name.startswith("sam2"):
        assert [tuple(t.shape) for t in features.high_res] == [
            (batch, d // 8, s // 4, s // 4),
            (batch, d // 4, s // 8, s // 8),
        ]
        assert single.object_score_logits.shape == (batch, 1)
    else:
        assert features.high_res == () and single.object_score_logits is None
    assert coarse.shape == (batch, 4, s, s)
    assert single.mask_logits.shape == (batch, 1, s, s) and single.iou_predictions.shape == (batch, 1)
    assert single.low_res_logits.shape == (batch, 1, s // 4, s // 4)
    assert multi.mask_logits.shape == (batch, 3, s, s) and multi.iou_predictions.shape == (batch, 3)
    assert refined.mask_logits.shape == (batch, 1, s, s)
    for tensor in (coarse, single.mask_logits, multi.mask_logits, refined.mask_logits):
        assert torch.isfinite(tensor).all()
    assert model.config["in_channels"] == in_channels and model.config["image_size"] == image_size
    assert model.patch_embedding.in_channels == in_channels


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_forward_full_path(name):
    """encode + coarse head + decode of the default 128 px tiny model (latency: bench/encoder_latency.py)."""
    model = load_model(name)
    images = torch.rand(1, 3, 128, 128)
    box = torch.tensor([[10.0, 10.0, 100.0, 90.0]])
    with torch.no_grad():
        out = model(images, boxes=box)
    assert out["mask_logits"].shape == (1, 1, 128, 128)
    assert torch.isfinite(out["mask_logits"]).all()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_config_is_plain_data_and_rebuilds_the_same_network(name):
    model = load_model(name, in_channels=4, num_classes=2, image_size=256)
    config = json.loads(json.dumps(model.config))  # survives JSON (and so YAML) unchanged
    assert config == model.config
    rebuilt = model_from_config(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_parameter_groups_cover_every_parameter_once(name):
    model = load_model(name)
    groups = model.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    expected = {"image_encoder", "prompt_encoder", "mask_decoder", "coarse_head", "feature_fusers"}
    assert set(groups) == expected | ({"memory"} if name.startswith("sam2") else set())


def test_image_size_must_fit_the_architecture():
    with pytest.raises(ValueError, match="SAM-2 image_size must be a positive multiple of 32"):
        load_model("sam2.1_hiera_tiny_test", image_size=200)
    with pytest.raises(ValueError, match="SAM-1 image_size must be a positive multiple of 16"):
        load_model("sam_vit_tiny_test", image_size=120)


def test_encode_rejects_the_wrong_input_shape():
    model = load_model("sam_vit_tiny_test", in_channels=4)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 4, 128, 128\), got \(1, 3, 128, 128\)"):
        model.encode(torch.rand(1, 3, 128, 128))


def test_decode_validates_prompt_shapes():
    model = load_model("sam2.1_hiera_tiny_test")
    with torch.no_grad():
        features = model.encode(torch.rand(2, 3, 128, 128))
    with pytest.raises(ValueError, match=r"boxes must be \(B, 4\) = \(2, 4\)"):
        model.decode(features, boxes=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="points and point_labels go together"):
        model.decode(features, points=torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match=r"point_labels must be \(B, N\) = \(2, 3\)"):
        model.decode(features, points=torch.zeros(2, 3, 2), point_labels=torch.ones(2, 2))


def test_combine_class_masks_takes_the_best_class_above_threshold():
    logits = torch.tensor([[[[2.0, -1.0, 0.5]], [[1.0, -3.0, 3.0]]]])  # (B=1, K=2, H=1, W=3)
    assert combine_class_masks(logits).tolist() == [[[1, 0, 2]]]
    assert combine_class_masks(logits, threshold=2.5).tolist() == [[[0, 0, 2]]]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_one_training_step_reaches_every_trained_part(tiny_model, name):
    model = tiny_model(name, num_classes=2).train()
    images = torch.rand(2, 3, 128, 128)
    out = model(images, boxes=torch.tensor([[10.0, 10.0, 80.0, 90.0], [40.0, 20.0, 120.0, 60.0]]))
    target = torch.zeros(2, 128, 128, dtype=torch.long)
    target[:, 30:70, 30:70] = 1
    loss = torch.nn.functional.cross_entropy(out["coarse_logits"], target) + out["mask_logits"].sigmoid().mean()
    loss.backward()
    groups = model.parameter_groups()
    for part in ("image_encoder", "mask_decoder", "coarse_head"):
        grads = [p.grad for p in groups[part] if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
