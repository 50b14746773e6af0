"""SAM-2's eval-mode single-mask fallback (``dynamic_multimask_via_stability``) is on only for official
weights used as they are; models built for training and medsam_kit checkpoints decode token 0."""

from __future__ import annotations

import pytest
import torch

from medsam_kit.models import load_model, make_config, model_from_checkpoint, read_checkpoint, save_checkpoint
from medsam_kit.models.sam2_builder import POSTPROCESSING_DECODER_ARGS

NAME = "sam2.1_hiera_tiny_test"


def write_official(model, path):
    torch.save({"model": model.sam.state_dict()}, path)
    return path


def single_mask(model, train: bool) -> torch.Tensor:
    """Single-mask logits for a fixed image and box; train mode never applies the fallback (token 0)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand((1, model.in_channels, model.image_size, model.image_size), generator=generator)
    boxes = torch.tensor([[20.0, 30.0, 90.0, 100.0]])
    model.train(train)
    with torch.no_grad():
        out = model.decode(model.encode(images), boxes=boxes, multimask_output=False)
    model.eval()
    return out.mask_logits


def test_architecture_keeps_official_decoder_args():
    """The architecture mirrors Meta's config; the switch lives in the model config."""
    config = load_model(NAME).config
    extra = config["architecture"]["sam_mask_decoder_extra_args"]
    assert {k: extra[k] for k in POSTPROCESSING_DECODER_ARGS} == POSTPROCESSING_DECODER_ARGS


def test_random_init_for_training_has_it_off(tiny_model):
    model = tiny_model(NAME, seed=2)
    assert model.config["decoder_postprocessing"] is False
    assert model.sam.sam_mask_decoder.dynamic_multimask_via_stability is False
    torch.testing.assert_close(single_mask(model, train=False), single_mask(model, train=True), rtol=0, atol=0)


def test_official_weights_as_they_are_have_it_on(tmp_path, tiny_model):
    official = load_model(NAME, checkpoint=write_official(tiny_model(NAME, seed=2), tmp_path / "official.pt"))
    assert official.config["decoder_postprocessing"] is True
    assert official.sam.sam_mask_decoder.dynamic_multimask_via_stability is True
    # Random weights give unstable token-0 masks, so the official fallback does change the output here.
    assert not torch.equal(single_mask(official, train=False), single_mask(official, train=True))
    # An explicit setting wins (e.g. a trainer starting from official weights).
    off = load_model(NAME, checkpoint=tmp_path / "official.pt", decoder_postprocessing=False)
    assert off.sam.sam_mask_decoder.dynamic_multimask_via_stability is False


def test_own_checkpoint_has_it_off(tmp_path, tiny_model):
    # Even a model saved while the fallback was on (official weights re-saved) reloads with it off.
    official = load_model(NAME, checkpoint=write_official(tiny_model(NAME, seed=2), tmp_path / "official.pt"))
    path = save_checkpoint(official, tmp_path / "own.pt")
    assert read_checkpoint(path).config["decoder_postprocessing"] is True
    for own in (model_from_checkpoint(path), load_model(None, checkpoint=path), load_model(NAME, checkpoint=path)):
        assert own.config["decoder_postprocessing"] is False
        assert own.sam.sam_mask_decoder.dynamic_multimask_via_stability is False
        torch.testing.assert_close(single_mask(own, train=False), single_mask(own, train=True), rtol=0, atol=0)


def test_checkpoint_without_the_key_has_it_off(tmp_path, tiny_model):
    """Checkpoints written before the flag existed (the architecture alone asked for the fallback)."""
    model = tiny_model(NAME, seed=2)
    path = save_checkpoint(model, tmp_path / "old.pt")
    obj = torch.load(path, weights_only=True)
    del obj["config"]["decoder_postprocessing"]
    torch.save(obj, path)
    assert model_from_checkpoint(path).sam.sam_mask_decoder.dynamic_multimask_via_stability is False


def test_bad_value_is_rejected():
    with pytest.raises(ValueError, match="decoder_postprocessing"):
        make_config(NAME, "sam2", load_model(NAME).config["architecture"], 128, decoder_postprocessing="yes")
