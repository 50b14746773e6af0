"""The real registry sizes have exactly the official architectures, so official checkpoints load.

SAM-2 is compared with ``sam2.build_sam.build_sam2`` (Hydra compose, the package's own path), SAM-1
with ``segment_anything.build_sam_vit_*`` built on the meta device (shapes only, no memory).
"""

from __future__ import annotations

import pytest
import torch

from medsam_kit.models import load_model, read_checkpoint
from medsam_kit.models.sam2_builder import sam2_architecture

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SAM2_SIZES = {
    "sam2.1_hiera_tiny": "t",
    "sam2.1_hiera_small": "s",
    "sam2.1_hiera_base_plus": "b+",
    "sam2.1_hiera_large": "l",
}


def shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def official_sam2_config(letter: str) -> dict:
    import sam2.build_sam  # noqa: F401  (initialises sam2's Hydra config module)
    from hydra import compose
    from omegaconf import OmegaConf

    overrides = [  # what build_sam2(apply_postprocessing=True) adds
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    ]
    cfg = compose(config_name=f"configs/sam2.1/sam2.1_hiera_{letter}.yaml", overrides=overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("name", list(SAM2_SIZES))
def test_sam2_architecture_equals_official_config(name):
    letter = SAM2_SIZES[name]
    assert sam2_architecture(f"sam2.1_hiera_{letter}.yaml", 1024) == official_sam2_config(letter)


@pytest.mark.parametrize(
    "name",
    [
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        pytest.param("sam2.1_hiera_large", marks=pytest.mark.slow),
    ],
)
def test_sam2_state_dict_layout_equals_official_at_any_size(name):
    from sam2.build_sam import build_sam2

    official = build_sam2(f"configs/sam2.1/sam2.1_hiera_{SAM2_SIZES[name]}.yaml", device="cpu")  # 1024 px
    ours = load_model(name, image_size=256)
    assert shapes(ours.sam.state_dict()) == shapes(official.state_dict())


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_sam1_state_dict_layout_equals_official(name):
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        official = sam_model_registry[name.removeprefix("sam_")]()
        ours = load_model(name, device="meta")
    assert shapes(ours.sam.state_dict()) == shapes(official.state_dict())
    assert ours.image_size == 1024 and ours.sam.image_encoder.img_size == 1024


@pytest.mark.slow
def test_medsam_vit_b_round_trip(tmp_path):
    """MedSAM ships SAM-1 ViT-B weights as a bare state dict (~360 MB at 1024 px)."""
    from segment_anything import build_sam_vit_b

    torch.manual_seed(0)
    official = build_sam_vit_b()
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(official.state_dict(), path)
    assert read_checkpoint(path).kind == "state_dict"
    loaded = load_model("sam_vit_b", checkpoint=path)
    for key, value in official.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[key], value), key
    at_256 = load_model("sam_vit_b", checkpoint=path, image_size=256)  # MedSAM-style fine-tuning size
    assert at_256.sam.image_encoder.pos_embed.shape == (1, 16, 16, 768)
