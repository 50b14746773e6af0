"""Experiment config: YAML round trip, defaults, clear errors on unknown keys and bad values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medsam_kit.data.preprocess import ChannelNormalization, PreprocessingPlan
from medsam_kit.engine.config import ExperimentConfig, config_from_dict, load_config, save_config
from medsam_kit.engine.intensity import intensity_spec, to_unit, unit_pad_value


def _write(tmp_path, data) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_round_trip_equal(tmp_path):
    config = load_config(_write(tmp_path, {
        "name": "x", "model": {"image_size": 64}, "train": {"steps": 7, "amp": False},
        "trainable": {"freeze": ["image_encoder"]}, "method": {"name": "supervised", "box_jitter_px": 3},
    }))
    assert config.train.steps == 7 and config.model.image_size == 64
    assert config.method["box_jitter_px"] == 3.0 and config.method["n_positive"] == 1  # defaults filled in
    saved = save_config(config, tmp_path / "run" / "config.yaml")
    again = load_config(saved)
    assert again == config
    assert again.to_dict() == yaml.safe_load(saved.read_text(encoding="utf-8"))


def test_defaults_and_int_for_float(tmp_path):
    config = config_from_dict({"optim": {"lr": 1}})
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config == config_from_dict({"optim": {"lr": 1.0}})
    assert ExperimentConfig().model.name == "sam2.1_hiera_tiny_test"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"stepz": 3}}, r"unknown config key\(s\) train\.stepz.*known keys in train: steps"),
        ({"trian": {}}, r"unknown config section\(s\) \['trian'\]"),
        ({"method": {"name": "supervised", "jitter": 1}}, r"method\.jitter for method 'supervised'.*box_jitter_px"),
        ({"method": {"name": "magic"}}, r"unknown method 'magic'; available: sss, supervised"),
        ({"train": {"steps": "ten"}}, r"train\.steps must be int"),
        ({"train": {"steps": 0}}, r"train\.steps must be >= 1"),
        ({"train": {"amp": "yes"}}, r"train\.amp must be 'auto', true or false"),
        ({"model": "tiny"}, r"section model must be a mapping"),
    ],
)
def test_errors_name_the_key(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_overrides_and_missing_file(tmp_path):
    config = load_config(_write(tmp_path, {"train": {"steps": 5}}), {"train.steps": 9, "data.raw": "/x"})
    assert config.train.steps == 9 and config.data.raw == "/x"
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def _plan(scheme: str, nonzero: bool = False) -> PreprocessingPlan:
    norm = (ChannelNormalization("ct_window", window=(0.0, 80.0)) if scheme == "ct_window"
            else ChannelNormalization(scheme, percentiles=(0.5, 99.5), use_nonzero_mask=nonzero))
    return PreprocessingPlan("d", "MRI", ("a",), {0: "background", 1: "x"}, (norm,))


def test_intensity_mapping_values():
    spec = intensity_spec(_plan("zscore"))
    assert spec == {"kind": "zscore_clip", "low": -3.0, "high": 3.0, "keep_zero": False}
    z = np.array([-5.0, -3.0, 0.0, 1.5, 3.0, 7.0], np.float32)
    expected = np.array([0.0, 0.0, 0.5, 0.75, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(to_unit(z, spec), expected, atol=1e-7)
    np.testing.assert_allclose(to_unit(torch.from_numpy(z), spec).numpy(), expected, atol=1e-7)
    assert unit_pad_value(spec) == 0.5
    brats = intensity_spec(_plan("zscore", nonzero=True))
    np.testing.assert_allclose(to_unit(np.array([0.0, 0.3], np.float32), brats), [0.0, 0.55], atol=1e-6)
    assert unit_pad_value(brats) == 0.0
    ident = intensity_spec(_plan("ct_window"))
    assert ident == {"kind": "identity"}
    np.testing.assert_allclose(to_unit(np.array([-0.1, 0.3, 1.2]), ident), [0.0, 0.3, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="unknown intensity mapping"):
        to_unit(z, {"kind": "log"})
