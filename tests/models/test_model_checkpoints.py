"""Checkpoints: every official layout and our own round-trip bit-exactly; mismatches give one clear error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsam_kit.models import (
    CheckpointError,
    apply_module_shapes,
    load_model,
    make_config,
    model_from_config,
    module_shape_changes,
    read_checkpoint,
    register_adapter,
    save_checkpoint,
)

TINY_MODELS = ("sam2.1_hiera_tiny_test", "sam_vit_tiny_test")


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def write_official(model, path):
    """The official layout of the model's family: SAM-2 ``{"model": sd}``, SAM-1 bare ``sd``."""
    state = model.sam.state_dict()
    torch.save({"model": state} if model.family == "sam2" else state, path)
    return state


@pytest.mark.parametrize("name", TINY_MODELS)
def test_official_layout_round_trip(tmp_path, tiny_model, name):
    source = tiny_model(name, seed=3)
    state = write_official(source, tmp_path / "official.pt")
    loaded = load_model(name, checkpoint=tmp_path / "official.pt")
    assert_state_equal(loaded.sam.state_dict(), state)
    assert read_checkpoint(tmp_path / "official.pt").kind == ("sam2" if name.startswith("sam2") else "state_dict")


def test_medsam2_layout_real_tiny_at_small_size(tmp_path):
    """MedSAM2 ships SAM-2.1 tiny weights as {"model": sd}; the real architecture round-trips at 256 px."""
    torch.manual_seed(0)
    source = load_model("sam2.1_hiera_tiny", image_size=256)
    path = tmp_path / "MedSAM2_latest.pt"
    state = write_official(source, path)
    loaded = load_model("sam2.1_hiera_tiny", checkpoint=path, image_size=256)
    assert_state_equal(loaded.sam.state_dict(), state)


def test_training_checkpoint_with_optimizer_and_ddp_prefix(tmp_path, tiny_model):
    """MedSAM-style training files: {"model": {"module.<key>": ...}, "optimizer": ...}."""
    source = tiny_model("sam_vit_tiny_test")
    state = source.sam.state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3, "optimizer": {}}, tmp_path / "m.pth")
    loaded = load_model("sam_vit_tiny_test", checkpoint=tmp_path / "m.pth")
    assert_state_equal(loaded.sam.state_dict(), state)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_own_format_round_trip_rebuilds_from_the_file_alone(tmp_path, tiny_model, name):
    source = tiny_model(name, seed=5, in_channels=4, num_classes=3, image_size=256)
    path = save_checkpoint(source, tmp_path / "run" / "last.pt", extra={"step": 12})
    loaded = load_model(None, checkpoint=path)  # no name, no sizes: the file knows
    assert loaded.config == source.config
    assert_state_equal(loaded.state_dict(), source.state_dict())
    assert read_checkpoint(path).extra == {"step": 12}
    images = torch.rand(1, 4, 256, 256)
    box = torch.tensor([[20.0, 30.0, 200.0, 180.0]])
    with torch.no_grad():
        a, b = source(images, boxes=box), loaded(images, boxes=box)
    assert torch.equal(a["mask_logits"], b["mask_logits"]) and torch.equal(a["coarse_logits"], b["coarse_logits"])


def test_own_format_refuses_conflicting_requests(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model("sam_vit_tiny_test", num_classes=3), tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"holds model_name='sam_vit_tiny_test', but 'sam_vit_b' was requested"):
        load_model("sam_vit_b", checkpoint=path)
    with pytest.raises(CheckpointError, match=r"holds num_classes=3, but 2 was requested"):
        load_model(None, checkpoint=path, num_classes=2)
    with pytest.raises(ValueError, match="cannot override the config stored in"):
        load_model(None, checkpoint=path, pixel_mean=[0.0, 0.0, 0.0])


def test_sam2_checkpoint_loads_unchanged_at_another_size(tmp_path, tiny_model):
    source = tiny_model("sam2.1_hiera_tiny_test", image_size=128)
    state = write_official(source, tmp_path / "s.pt")
    loaded = load_model("sam2.1_hiera_tiny_test", checkpoint=tmp_path / "s.pt", image_size=256)
    assert_state_equal(loaded.sam.state_dict(), state)
    own = load_model(None, checkpoint=save_checkpoint(source, tmp_path / "own.pt"), image_size=256)
    assert own.image_size == 256 and own.config["architecture"]["memory_attention"]["layer"]["self_attention"][
        "feat_sizes"
    ] == [16, 16]
    assert_state_equal(own.state_dict(), source.state_dict())


def test_sam1_position_tables_are_interpolated_to_the_new_size(tmp_path, tiny_model):
    source = tiny_model("sam_vit_tiny_test", image_size=128)  # grid 8x8, block 1 global
    state = write_official(source, tmp_path / "s.pth")
    loaded = load_model("sam_vit_tiny_test", checkpoint=tmp_path / "s.pth", image_size=256).sam.state_dict()
    pos = state["image_encoder.pos_embed"]  # (1, 8, 8, 64)
    expected = F.interpolate(pos.permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", align_corners=False)
    assert torch.equal(loaded["image_encoder.pos_embed"], expected.permute(0, 2, 3, 1))
    rel = state["image_encoder.blocks.1.attn.rel_pos_h"]  # global block: (2*8-1, head_dim)
    expected_rel = F.interpolate(rel.t()[None], size=31, mode="linear")[0].t()
    assert torch.equal(loaded["image_encoder.blocks.1.attn.rel_pos_h"], expected_rel)
    # Windowed blocks' tables depend on the window, not the image: unchanged.
    assert torch.equal(loaded["image_encoder.blocks.0.attn.rel_pos_w"], state["image_encoder.blocks.0.attn.rel_pos_w"])
    others = [k for k in state if "pos_embed" not in k and "blocks.1.attn.rel_pos" not in k]
    assert all(torch.equal(loaded[k], state[k]) for k in others)


def test_mismatch_error_names_file_and_keys(tmp_path, tiny_model):
    state = tiny_model("sam2.1_hiera_tiny_test").sam.state_dict()
    del state["no_mem_embed"]
    state["image_encoder.trunk.extra_bias"] = torch.zeros(3)
    state["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    path = tmp_path / "broken.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_model("sam2.1_hiera_tiny_test", checkpoint=path)
    message = str(info.value)
    assert str(path) in message and "model 'sam2.1_hiera_tiny_test'" in message
    assert "1 missing key: no_mem_embed" in message
    assert "1 unexpected key: image_encoder.trunk.extra_bias" in message
    assert "1 mis-shaped key: sam_mask_decoder.iou_token.weight (file (1, 7), model (1, 64))" in message
    assert "\n" not in message  # the CLI prints it as one line


def test_mismatch_error_lists_first_keys_and_counts_and_hints_family(tmp_path, tiny_model):
    path = tmp_path / "sam1.pth"
    write_official(tiny_model("sam_vit_tiny_test"), path)
    with pytest.raises(CheckpointError) as info:
        load_model("sam2.1_hiera_tiny_test", checkpoint=path)
    message = str(info.value)
    assert "missing keys:" in message and "more" in message and "unexpected keys:" in message
    assert "the file looks like a SAM-1 (sam_vit_*) checkpoint" in message


def test_unreadable_and_unsafe_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(
        CheckpointError, match=r"cannot read checkpoint .*garbage\.pt with torch\.load\(weights_only=True\)"
    ):
        read_checkpoint(garbage)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Unsafe(1)}, pickled)
    with pytest.raises(CheckpointError, match="pickled Python objects are refused"):
        read_checkpoint(pickled)
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"a": 1, "b": torch.zeros(1)}, not_tensors)
    with pytest.raises(CheckpointError, match="1 entries are not tensors"):
        read_checkpoint(not_tensors)


@dataclass
class Unsafe:
    value: int


class _Gain(nn.Module):
    """Test adapter: a learnable gain on the image embedding (stands in for an expert branch)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1,), scale))

    def forward(self, images, features):
        return type(features)(features.image_embed * self.gain, features.high_res)


@register_adapter("test_gain")
def _attach_gain(model, scale: float = 1.0) -> None:
    model.feature_fusers.append(_Gain(scale))


@pytest.mark.parametrize("name", TINY_MODELS)
def test_adapters_attach_by_config_and_reload(tmp_path, tiny_model, name):
    model = tiny_model(name, adapters=[{"type": "test_gain", "scale": 2.0}])
    assert "feature_fusers.0.gain" in model.state_dict()
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        base = model.sam.image_encoder((images - model.pixel_mean) / model.pixel_std)
        embed = model.encode(images).image_embed
    if name.startswith("sam_vit"):
        torch.testing.assert_close(embed, 2.0 * base)
    with torch.no_grad():
        model.feature_fusers[0].gain.fill_(3.5)
    loaded = load_model(None, checkpoint=save_checkpoint(model, tmp_path / "a.pt"))
    assert loaded.feature_fusers[0].gain.item() == 3.5
    with pytest.raises(ValueError, match="unknown adapter type 'lora'"):
        load_model(name, adapters=[{"type": "lora", "rank": 4}])


def test_pruned_widths_are_described_in_the_config_and_reload(tmp_path, tiny_model):
    reference = tiny_model("sam_vit_tiny_test")
    pruned = tiny_model("sam_vit_tiny_test")
    block = pruned.sam.image_encoder.blocks[0].mlp
    with torch.no_grad():  # keep the first 96 of 256 hidden units, as a pruning step would
        lin1, lin2 = nn.Linear(64, 96), nn.Linear(96, 64)
        lin1.weight.copy_(block.lin1.weight[:96]), lin1.bias.copy_(block.lin1.bias[:96])
        lin2.weight.copy_(block.lin2.weight[:, :96]), lin2.bias.copy_(block.lin2.bias)
    block.lin1, block.lin2 = lin1, lin2
    shapes = module_shape_changes(pruned, reference)
    assert set(shapes) == {"sam.image_encoder.blocks.0.mlp.lin1", "sam.image_encoder.blocks.0.mlp.lin2"}
    pruned.config["module_shapes"] = shapes
    loaded = load_model(None, checkpoint=save_checkpoint(pruned, tmp_path / "pruned.pt"))
    assert loaded.sam.image_encoder.blocks[0].mlp.lin1.out_features == 96
    assert_state_equal(loaded.state_dict(), pruned.state_dict())
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(loaded.encode(images).image_embed, pruned.encode(images).image_embed)
    # An official checkpoint cannot fill a pruned network.
    official = tmp_path / "official.pth"
    write_official(reference, official)
    config = make_config("sam_vit_tiny_test", "sam", reference.config["architecture"], 128, module_shapes=shapes)
    with pytest.raises(CheckpointError, match="module_shapes"):
        model_from_config(config, official_state=torch.load(official, weights_only=True), source=official)


def test_module_shapes_parameters_and_attributes():
    model = load_model("sam_vit_tiny_test")
    apply_module_shapes(
        model,
        {
            "sam.image_encoder.pos_embed": {"type": "Parameter", "shape": [1, 8, 8, 32]},
            "sam.image_encoder.blocks.0.attn": {"type": "attributes", "values": {"num_heads": 1}},
        },
    )
    assert model.sam.image_encoder.pos_embed.shape == (1, 8, 8, 32)
    assert model.sam.image_encoder.blocks[0].attn.num_heads == 1
    with pytest.raises(ValueError, match="must be a number, bool or list"):
        apply_module_shapes(model, {"sam.image_encoder.blocks.0.attn": {"type": "attributes", "values": {"x": "os"}}})
    with pytest.raises(ValueError, match="has no attribute 'sam.nothing'"):
        apply_module_shapes(model, {"sam.nothing": {"type": "Parameter", "shape": [1]}})


def test_config_in_a_checkpoint_cannot_name_arbitrary_code(tmp_path, tiny_model):
    model = tiny_model("sam2.1_hiera_tiny_test")
    model.config["architecture"]["image_encoder"]["neck"]["position_encoding"]["_target_"] = "os.system"
    path = save_checkpoint(model, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"names 'os.system' at architecture\.image_encoder\.neck\.position_encoding"):
        load_model(None, checkpoint=path)
