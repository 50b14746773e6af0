"""A checkpoint's config is data: no path through it may build or call anything but the known classes.

The attack these tests replay (found by a security probe): ``torch.load(weights_only=True)`` keeps
pickles out of the file itself, but the config inside went to Hydra's ``instantiate``, which follows
any dotted path under an allowed prefix (``sam2.modeling.sam2_base.torch.load``) and honours
``_args_`` -- so a crafted architecture loaded a second file with ``weights_only=False`` and ran it.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from medsam_kit.models import CheckpointError, load_model, model_from_checkpoint, save_checkpoint
from medsam_kit.models.factory import check_config
from medsam_kit.models.sam2_builder import build_sam2_module, sam2_architecture


class _Payload:
    """Unpickling this creates ``marker``: the proof that a pickle in a second file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def payloads(tmp_path):
    """``(marker, torch_file, numpy_file)``: two pickle payloads that would create ``marker`` when loaded."""
    marker = tmp_path / "code_ran"
    torch_file, numpy_file = tmp_path / "payload.pt", tmp_path / "payload.npy"
    torch.save(_Payload(str(marker)), torch_file)
    np.save(numpy_file, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    assert not marker.exists()
    return marker, torch_file, numpy_file


def _evil_nodes(torch_file, numpy_file) -> list[dict]:
    return [
        {"_target_": "sam2.modeling.sam2_base.torch.load", "_args_": [str(torch_file)], "weights_only": False},
        {"_target_": "sam2.modeling.sam2_utils.np.load", "_args_": [str(numpy_file)], "allow_pickle": True},
    ]


@pytest.fixture(scope="module")
def sam2_model():
    torch.manual_seed(0)
    return load_model("sam2.1_hiera_tiny_test")


def _crafted(model, tmp_path, name: str, edit) -> object:
    """A medsam_kit checkpoint of ``model`` whose stored config was changed by ``edit(config)``."""
    original = copy.deepcopy(model.config)
    try:
        edit(model.config)
        return save_checkpoint(model, tmp_path / f"{name}.pt")
    finally:
        model.config = original


@pytest.mark.parametrize("where", ["memory_attention.layer.dropout", "image_encoder.trunk.window_spec",
                                   "image_encoder.neck.position_encoding", "(root)"])
@pytest.mark.parametrize("loader", ["torch", "numpy"])
def test_hydra_targets_reaching_loaders_run_nothing(tmp_path, sam2_model, payloads, where, loader):
    marker, torch_file, numpy_file = payloads
    evil = _evil_nodes(torch_file, numpy_file)[loader == "numpy"]

    def edit(config):
        if where == "(root)":
            config["architecture"]["_target_"] = evil["_target_"]
            config["architecture"]["_args_"] = evil["_args_"]
            return
        *parents, leaf = where.split(".")
        node = config["architecture"]
        for key in parents:
            node = node[key]
        node[leaf] = copy.deepcopy(evil)

    path = _crafted(sam2_model, tmp_path, "evil", edit)
    for load in (lambda: load_model(None, checkpoint=path), lambda: model_from_checkpoint(path),
                 lambda: load_model("sam2.1_hiera_tiny_test", checkpoint=path)):
        with pytest.raises(ValueError, match=r"SAM-2 config|not allowed|names"):
            load()
    assert not marker.exists()


def test_run_folder_and_predict_refuse_the_crafted_checkpoint(tmp_path, sam2_model, payloads):
    """``Segmenter.from_run`` and ``predict --checkpoint`` / ``--run`` (the doors the probe used)."""
    from medsam_kit import Segmenter
    from medsam_kit.io import Geometry, Volume, write_volume

    marker, torch_file, numpy_file = payloads

    def edit(config):
        config["architecture"]["memory_attention"]["layer"]["dropout"] = _evil_nodes(torch_file, numpy_file)[0]

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = _crafted(sam2_model, tmp_path, "evil", edit)
    (run / "checkpoints" / "best.pt").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="memory_attention.layer.dropout"):
        Segmenter.from_run(run)
    volume = tmp_path / "image.nii.gz"
    write_volume(volume, Volume(np.zeros((3, 32, 32), np.int16), Geometry()))
    for source in (["--model", "sam2.1_hiera_tiny_test", "--checkpoint", str(path)], ["--run", str(run)]):
        result = subprocess.run(
            [sys.executable, "-m", "medsam_kit", "predict", *source, "--input", str(volume),
             "--output", str(tmp_path / "out.nii.gz")],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode not in (0, -11, 139), result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "memory_attention.layer.dropout" in result.stderr
    assert not marker.exists() and not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.__setitem__("_target_", "os.system"), r"names 'os.system' at architecture;"),
        (lambda a: a["image_encoder"].__setitem__("_target_", "sam2.modeling.backbones.hieradet.Hiera"),
         r"names 'sam2.modeling.backbones.hieradet.Hiera' at architecture.image_encoder;"),
        (lambda a: a["image_encoder"]["trunk"].__setitem__("_partial_", True), r"'_partial_' .* not an argument"),
        (lambda a: a["image_encoder"]["trunk"].__setitem__("window_spec", [8, {"_args_": ["x"]}]),
         r"key '_args_' is not allowed"),
        (lambda a: a["memory_encoder"].__setitem__("mask_downsampler", 3), r"must be a dict naming"),
        (lambda a: a["image_encoder"]["trunk"].__setitem__("drop_path_rate", float("nan")), r"not a finite number"),
        (lambda a: a.__setitem__("compile_image_encoder", True), r"compile_image_encoder = True is refused"),
        (lambda a: a["image_encoder"]["trunk"].__setitem__("embed_dim_typo", 8), r"not an argument of .*Hiera"),
        (lambda a: a["image_encoder"]["trunk"].__setitem__("stages", [1, "1", 2, 1]), r"holds text"),
    ],
)
def test_sam2_architecture_must_be_plain_data_with_known_classes(edit, message):
    architecture = sam2_architecture("sam2.1_hiera_t.yaml", 256)
    edit(architecture)
    with pytest.raises(ValueError, match=message):
        build_sam2_module(architecture)


def test_every_other_config_entry_is_plain_data(sam2_model):
    sam1 = load_model("sam_vit_tiny_test")
    cases = [
        (sam2_model, lambda c: c["adapters"].append({"type": "lora", "init": {"_target_": "os.system"}}),
         r"model config adapters\[0\]\.init: key '_target_'"),
        (sam2_model, lambda c: c["coarse_head"].__setitem__("use_high_res", {1, 2}), r"set is not plain data"),
        (sam1, lambda c: c["architecture"].__setitem__("encoder_depth", "2"), r"encoder_depth must be an integer"),
        (sam1, lambda c: c["architecture"].__setitem__("norm_layer", "torch.nn.Identity"), r"unknown keys \['norm_la"),
        (sam1, lambda c: c["architecture"].__setitem__("encoder_global_attn_indexes", [9]), r"block indices below"),
        (sam1, lambda c: c["module_shapes"].__setitem__("sam.__class__", {"type": "Parameter", "shape": [1]}),
         r"not a dotted path of public attribute names"),
        (sam1, lambda c: c["module_shapes"].__setitem__(
            "sam.image_encoder.blocks.0.attn", {"type": "attributes", "values": {"__dict__": 1}}),
         r"key '__dict__' is not allowed"),
        (sam1, lambda c: c["module_shapes"].__setitem__(
            "sam.image_encoder.blocks.0.attn", {"type": "Linear", "in_features": 4, "device": "cuda"}),
         r"unknown keys \['device'\]"),
    ]
    for model, edit, message in cases:
        config = copy.deepcopy(model.config)
        edit(config)
        with pytest.raises(ValueError, match=message):
            check_config(config, source="test")


def test_module_shapes_attributes_set_only_existing_numbers():
    from medsam_kit.models import apply_module_shapes

    model = load_model("sam_vit_tiny_test")
    with pytest.raises(ValueError, match="not an existing number / bool attribute"):
        apply_module_shapes(model, {"sam.image_encoder.blocks.0.attn": {"type": "attributes",
                                                                        "values": {"forward": 1}}})
    assert callable(model.sam.image_encoder.blocks[0].attn.forward)


@pytest.mark.parametrize("yaml_name", ["sam2.1_hiera_t.yaml", "sam2.1_hiera_b+.yaml"])
def test_builder_equals_hydra_instantiate(yaml_name):
    """Our data-only builder makes exactly the network Hydra made from the same dict (same init order)."""
    from hydra.utils import instantiate

    architecture = sam2_architecture(yaml_name, 256)
    torch.manual_seed(0)
    reference = instantiate(copy.deepcopy(architecture), _recursive_=True)
    torch.manual_seed(0)
    ours = build_sam2_module(architecture)
    assert type(ours) is type(reference)
    expected, built = reference.state_dict(), ours.state_dict()
    assert built.keys() == expected.keys()
    assert all(torch.equal(built[k], expected[k]) for k in expected)


def test_truncated_and_pickled_files_are_told_apart(tmp_path, sam2_model):
    path = save_checkpoint(sam2_model, tmp_path / "whole.pt")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 0):
        truncated = tmp_path / f"cut{cut}.pt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated or not a PyTorch checkpoint.*copy or download") as info:
            load_model(None, checkpoint=truncated)
        assert "pickled Python objects" not in str(info.value)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": _Payload(str(tmp_path / "never"))}, pickled)
    with pytest.raises(CheckpointError, match=r"Unsupported global: GLOBAL io.open; files holding pickled"):
        load_model(None, checkpoint=pickled)
    assert not (tmp_path / "never").exists()


def test_hiera_weights_path_cannot_load_another_file(tmp_path, sam2_model, payloads, monkeypatch):
    """Hiera's real ``weights_path`` argument makes sam2 call ``torch.load`` itself (no ``weights_only`` on
    older torch; here forced off as torch < 2.6 would have it): refused before anything is built."""
    marker, torch_file, _ = payloads
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    def edit(config):
        config["architecture"]["image_encoder"]["trunk"]["weights_path"] = str(torch_file)

    path = _crafted(sam2_model, tmp_path, "weights_path", edit)
    with pytest.raises(ValueError, match=r"trunk\.weights_path = .* is refused .*torch\.load another file"):
        load_model(None, checkpoint=path)
    assert not marker.exists()
