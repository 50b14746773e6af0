"""``Segmenter.from_run`` goes through the one seam that calls the training side's ``load_run``."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from medsam_kit.data.preprocess import ChannelNormalization, PreprocessingPlan
from medsam_kit.infer import Segmenter


def test_from_run_uses_load_run_and_intensity_to_unit(monkeypatch, tiny_sam, tmp_path):
    model = tiny_sam("sam_vit_tiny_test")
    plan = PreprocessingPlan("t", "MRI", ("cine",), {0: "background", 1: "RV", 2: "MYO", 3: "LV"},
                             (ChannelNormalization("zscore", percentiles=(0.5, 99.5)),))
    seen = {}

    def load_run(run_dir, device="cpu"):
        seen["run_dir"], seen["device"] = run_dir, device
        return model, {"plan": plan.to_dict(), "label_names": {"1": "RV", "2": "MYO", "3": "LV"},
                       "intensity_to_unit": {"kind": "sigmoid"}}

    def to_unit(image, spec):
        seen["spec"] = spec
        return 1 / (1 + np.exp(-image))

    monkeypatch.setitem(sys.modules, "medsam_kit.engine.run", types.SimpleNamespace(load_run=load_run))
    monkeypatch.setitem(sys.modules, "medsam_kit.engine.intensity",
                        types.SimpleNamespace(to_unit=to_unit))
    segmenter = Segmenter.from_run(tmp_path, batch_size=2)
    assert seen["run_dir"] == tmp_path and seen["device"] == "cpu" and segmenter.plan == plan
    assert segmenter.label_names == {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
    result = segmenter.segment_volume(np.random.default_rng(0).random((4, 30, 30)).astype(np.float32))
    assert seen["spec"] == {"kind": "sigmoid"} and result.labels.shape == (4, 30, 30)


def test_from_run_without_training_side_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "medsam_kit.engine.run", None)  # import raises ImportError
    with pytest.raises(ValueError, match="load_run"):
        Segmenter.from_run(tmp_path)


def test_from_run_with_the_real_training_side(tmp_path, tiny_sam, phantom_factory):
    """A run folder as the trainer writes it (best.pt with plan, label names, intensity mapping)."""
    import torch

    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.engine.intensity import intensity_spec, unit_pad_value
    from medsam_kit.engine.run import checkpoint_path
    from medsam_kit.io import Volume
    from medsam_kit.models import load_model, save_checkpoint

    plan = PreprocessingPlan("acdc", "MRI", ("cine",), {0: "background", 1: "RV", 2: "MYO", 3: "LV"},
                             (ChannelNormalization("zscore", percentiles=(0.5, 99.5)),), target_spacing_xy=(1.5, 1.5))
    torch.manual_seed(0)
    model = load_model("sam2.1_hiera_tiny_test", in_channels=1, num_classes=3)
    spec = intensity_spec(plan)
    save_checkpoint(model, checkpoint_path(tmp_path, "best"), extra={
        "dataset": "acdc", "label_names": {1: "RV", 2: "MYO", 3: "LV"}, "channel_names": ["cine"],
        "plan": plan.to_dict(), "intensity_to_unit": spec})
    segmenter = Segmenter.from_run(tmp_path)
    assert segmenter.plan == plan and segmenter.label_names[3] == "LV"
    assert segmenter.predictor.pad_value == unit_pad_value(spec) == 0.5  # z = 0 -> 0.5
    case = get_adapter("acdc").discover(phantom_factory("acdc", cases=1))[0].load()
    result = segmenter.segment_volume(Volume(case.image[0], case.geometry))
    assert result.labels.shape == case.label.shape and result.geometry == case.geometry
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3}
