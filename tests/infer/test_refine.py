"""Automatic mode's refinement: ``refine="auto"`` keeps the coarse answer unless the decoder agrees with it.

Unit cases on hand-made probabilities (what each rule of :func:`fuse_refinement` must and must not do),
and the three modes through :func:`segment_automatic` on a tiny random model: ``none`` is exactly the
coarse head's argmax and decodes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsam_kit.infer.cache import EmbeddingCache
from medsam_kit.infer.slice_predictor import SlicePredictor
from medsam_kit.infer.volume import coarse_label_volume, fuse_refinement, segment_automatic


def _coarse(labels: np.ndarray, classes: int, sure: float = 0.9) -> np.ndarray:
    """``(K + 1, Z, Y, X)`` probabilities whose argmax is ``labels``, ``sure`` on the chosen class."""
    rest = (1 - sure) / classes
    probabilities = np.full((classes + 1, *labels.shape), rest, np.float32)
    for k in range(classes + 1):
        probabilities[k][labels == k] = sure
    return probabilities


VALUES = np.asarray([0, 1, 2, 3], np.uint8)


def _argmax(probabilities: np.ndarray, values: np.ndarray) -> np.ndarray:
    return values[probabilities.argmax(axis=0)]


def _ring_scene() -> np.ndarray:
    """(3, 24, 24): class 2 a ring (myocardium) around class 3 (a cavity), class 1 beside them."""
    y, x = np.mgrid[:24, :24]
    radius = np.hypot(y - 12, x - 12)
    labels = np.zeros((3, 24, 24), np.uint8)
    labels[:, radius < 8] = 2
    labels[:, radius < 5] = 3
    labels[:, 2:6, 2:6] = 1
    return labels


def test_a_decoder_mask_on_the_wrong_nested_structure_cannot_take_sure_pixels():
    labels = _ring_scene()
    coarse = _coarse(labels, 3)
    wrong = np.where(labels >= 2, 0.95, 0.01).astype(np.float32)  # the cavity's mask grown over the ring
    decoder = {1: np.where(labels == 1, 0.9, 0.0), 3: wrong}
    fused, _ = fuse_refinement(_argmax(coarse, VALUES), coarse, decoder, [1, 2, 3])
    np.testing.assert_array_equal(fused, labels)


def test_agreeing_decoder_moves_an_unsure_boundary():
    labels = _ring_scene()
    coarse = _coarse(labels, 3, sure=0.9)
    edge = (labels == 0) & (np.roll(labels, 1, axis=2) == 2)  # one pixel column outside the ring's right side
    coarse[:, edge] = np.asarray([0.45, 0.05, 0.40, 0.10])[:, None]  # unsure there: background by a little
    decoder = np.where((labels == 2) | edge, 0.9, 0.02).astype(np.float32)
    fused, scores = fuse_refinement(_argmax(coarse, VALUES), coarse, {2: decoder}, [1, 2, 3], keep_scores=True)
    assert (fused[edge] == 2).all()
    assert (fused[~edge] == labels[~edge]).all()
    assert scores.shape == coarse.shape


def test_a_stable_decoder_removes_a_false_positive_it_leaves_out_and_hesitant_ones_change_nothing():
    labels = _ring_scene()
    labels[0, 18:21, 2:5] = 3  # a coarse false positive of the cavity class, apart from the object
    coarse = _coarse(labels, 3, sure=0.9)
    coarse[:, 0, 18:21, 2:5] = np.asarray([0.35, 0.1, 0.1, 0.45])[:, None, None]  # and an unsure one
    decoder = np.where(labels == 3, 0.95, 0.0).astype(np.float32)
    decoder[0, 18:21, 2:5] = 0.0  # the decoder followed the real cavity only, sure of its mask
    fused, _ = fuse_refinement(_argmax(coarse, VALUES), coarse, {3: decoder}, [1, 2, 3])
    kept = labels.copy()
    kept[0, 18:21, 2:5] = 0
    np.testing.assert_array_equal(fused, kept)
    # the same mask, hesitant (probabilities near 0.5: unstable) and shifted away from the coarse one: ignored
    hesitant = np.roll(np.where(labels == 3, 0.55, 0.45), 6, axis=2).astype(np.float32)
    fused, _ = fuse_refinement(_argmax(coarse, VALUES), coarse, {3: hesitant}, [1, 2, 3])
    np.testing.assert_array_equal(fused, labels)
    # a class the decoder did not find keeps every component
    fused, _ = fuse_refinement(_argmax(coarse, VALUES), coarse, {3: np.zeros_like(decoder)}, [1, 2, 3])
    np.testing.assert_array_equal(fused, labels)


def test_label_values_other_than_one_to_k():
    labels = _ring_scene()
    coarse = _coarse(labels, 3)
    values = np.asarray([0, 1, 2, 4], np.uint8)  # BraTS 2021: channels 1..3 are labels 1, 2, 4
    fused, _ = fuse_refinement(values[labels], coarse, {4: np.where(labels == 3, 0.9, 0.0)}, [1, 2, 4])
    np.testing.assert_array_equal(fused, values[labels])


@pytest.fixture(scope="module")
def predictor():
    from medsam_kit.models import load_model

    torch.manual_seed(0)
    model = load_model("sam_vit_tiny_test", in_channels=1, num_classes=2).eval()
    return SlicePredictor(model, EmbeddingCache(), batch_size=4)


def test_modes_through_segment_automatic(predictor):
    rng = np.random.default_rng(0)
    image = rng.random((1, 5, 40, 48)).astype(np.float32)
    coarse = coarse_label_volume(predictor, "v", image, [1, 2])
    decodes = []
    original = predictor.decode

    def counting(*args, **kwargs):
        decodes.append(1)
        return original(*args, **kwargs)

    predictor.decode = counting
    try:
        none, prompts = segment_automatic(predictor, "v", image, [1, 2], refine="none", keep_probabilities=True)
        assert not decodes
        np.testing.assert_array_equal(none.labels(), coarse)
        assert set(none.probabilities) == {1, 2} and none.probabilities[1].shape == (5, 40, 48)
        decoder, _ = segment_automatic(predictor, "v", image, [1, 2], refine="decoder")
        auto, _ = segment_automatic(predictor, "v", image, [1, 2], refine="auto")
    finally:
        predictor.decode = original
    assert decodes  # the decoder modes decode
    assert len(prompts.labels()) >= 1
    for result in (decoder, auto):
        labels = result.labels()
        assert labels.shape == (5, 40, 48) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    # auto never labels a pixel with a class the coarse head gave no pixel of on that slice's object
    assert set(np.unique(auto.labels())) <= set(np.unique(coarse))
    with pytest.raises(ValueError, match="refine must be one of"):
        segment_automatic(predictor, "v", image, [1, 2], refine="best")


def test_automatic_output_of_an_under_trained_run_does_not_lose_to_its_coarse_head(phantom_factory, tmp_path):
    """The issue's check: an under-trained run (100 steps), held-out volumes of the training style and of
    the other phantom style; ``refine="auto"`` (predict's default) >= the coarse head alone - 0.01."""
    import json

    from medsam_kit.data.adapters import get_adapter
    from medsam_kit.data.cache import prepare
    from medsam_kit.data.phantoms import generate_phantoms
    from medsam_kit.engine.config import config_from_dict
    from medsam_kit.engine.metrics import class_metrics
    from medsam_kit.engine.trainer import Trainer
    from medsam_kit.infer import Segmenter

    raw = phantom_factory("acdc", cases=5)
    prepare("acdc", raw, tmp_path / "prepared")
    config = config_from_dict({
        "name": "under_trained", "data": {"prepared": str(tmp_path / "prepared")},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "train": {"steps": 100, "batch_size": 4, "val_every": 0, "checkpoint_every": 100, "device": "cpu"},
    })
    Trainer(config, tmp_path / "run").fit()
    segmenter = Segmenter.from_run(tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    records = {r.case_id: r for r in get_adapter("acdc").discover(raw)}
    held_out = [records[c] for c in split["test"]]
    other_style = generate_phantoms("acdc", tmp_path / "style_b", cases=2, seed=5, style="B")
    held_out += [r for r in get_adapter("acdc").discover(other_style) if r.label_file is not None][:2]
    names = {"RV": (1,), "MYO": (2,), "LV": (3,)}
    means = {}
    for refine in ("none", "auto"):
        scores = []
        for record in held_out:
            case = record.load()
            labels = segmenter.segment_volume(case.image, geometry=case.geometry, refine=refine).labels
            metrics = class_metrics(labels, case.label, names, case.geometry.spacing_zyx, 2.0)
            scores.append(np.mean([metrics[k]["dice"] for k in names]))
        means[refine] = float(np.mean(scores))
    assert means["none"] > 0.05  # the run learnt something: the comparison is not between two empty outputs
    assert means["auto"] >= means["none"] - 0.01, means
