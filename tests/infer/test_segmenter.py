"""Python API: geometry of the output = the input's (oblique LPS, resampling plan), prompts on the input
grid, automatic mode on an ACDC phantom."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.preprocess import ChannelNormalization, PreprocessingPlan
from medsam_kit.infer import PropagationOptions, Segmenter
from medsam_kit.io import Geometry, Volume
from medsam_kit.prompts import BoxPrompt, PromptSet, SlicePrompts


def _oblique_geometry() -> Geometry:
    angle = np.deg2rad(25)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    return Geometry(spacing=(0.8, 1.2, 3.0), origin=(-40.0, 12.5, 7.0), direction=tuple(map(tuple, rot @ tilt)))


def _plan(modality="EM", scheme="percentile_scale", names=None) -> PreprocessingPlan:
    return PreprocessingPlan(dataset="test", modality=modality, channel_names=("img",),
                             label_names=names or {0: "background", 1: "object"},
                             normalization=(ChannelNormalization(scheme, percentiles=(0.5, 99.5)),),
                             target_spacing_xy=(1.0, 1.0))


def test_prompted_output_is_on_the_oblique_input_grid(stub_model):
    geometry = _oblique_geometry()
    image = np.zeros((8, 50, 70), np.float32)
    image[2:6, 10:30, 20:50] = 100.0
    segmenter = Segmenter(stub_model(image_size=64), plan=_plan(), propagation=PropagationOptions(min_area=2))
    prompts = PromptSet({1: {3: SlicePrompts(boxes=(BoxPrompt(20, 10, 50, 30),))}})
    result = segmenter.segment_volume(Volume(image, geometry), prompts, return_probabilities=True)
    assert result.labels.shape == image.shape and result.labels.dtype == np.uint8
    assert result.geometry == geometry
    assert result.label_names == {0: "background", 1: "object"}
    # the stub returns "bright pixels inside the box": the whole object comes back on the input grid
    truth = image > 0
    dice = 2 * np.sum((result.labels == 1) & truth) / (np.sum(result.labels == 1) + truth.sum())
    assert dice > 0.9
    # the prompt was mapped onto the resampled grid (1 mm in-plane instead of 0.8 x 1.2 mm)
    (label, k, mapped), = list(result.prompts)
    assert (label, k) == (1, 3)
    np.testing.assert_allclose(mapped.boxes[0].as_tuple(), (16, 12, 40, 36), atol=0.6)
    assert set(result.probabilities) == {1} and result.probabilities[1].shape == image.shape
    assert result.probabilities[1][truth].mean() > 0.9 and result.probabilities[1][~truth].mean() < 0.1


def test_prompt_document_and_plain_array_without_plan(stub_model):
    image = np.zeros((5, 30, 40), np.float32)
    image[1:4, 5:15, 10:30] = 1.0
    segmenter = Segmenter(stub_model(image_size=32), label_names={0: "background", 1: "object"},
                          propagation=PropagationOptions(min_area=1))
    doc = {"labels": {"object": {"2": {"boxes": [[10, 5, 30, 15]]}}}}
    result = segmenter.segment_volume(image, doc)
    np.testing.assert_array_equal(result.labels, image.astype(np.uint8))
    assert result.geometry == Geometry() and result.mode == "prompted"
    with pytest.raises(ValueError, match="outside"):
        segmenter.segment_volume(image, {1: {9: SlicePrompts(boxes=(BoxPrompt(1, 1, 5, 5),))}})
    with pytest.raises(ValueError, match="unknown label name"):
        segmenter.segment_volume(image, {"labels": {"liver": {"2": {"boxes": [[1, 1, 5, 5]]}}}})


def test_segment_slice_maps_a_box_on_a_non_square_slice(stub_model):
    segmenter = Segmenter(stub_model(image_size=64))
    image = np.zeros((40, 100), np.float32)
    image[10:30, 20:60] = 3.0
    mask = segmenter.segment_slice(image, box=(0, 0, 40, 40))
    np.testing.assert_array_equal(mask[12:28, 22:38], True)
    assert not mask[:, 42:].any() and not mask[:8].any()
    with pytest.raises(ValueError, match="outside"):
        segmenter.segment_slice(image, box=(0, 0, 101, 40))


@pytest.mark.parametrize("name", ["sam_vit_tiny_test", "sam2.1_hiera_tiny_test"])
def test_automatic_mode_on_acdc_phantom(phantom_factory, tiny_sam, name):
    root = phantom_factory("acdc", cases=1)
    case = get_adapter("acdc").discover(root)[0].load()
    names = dict(case.label_names)
    plan = _plan("MRI", "zscore", names)
    segmenter = Segmenter(tiny_sam(name, num_classes=3), plan=plan)
    volume = Volume(case.image[0], case.geometry)
    result = segmenter.segment_volume(volume, return_probabilities=True)
    assert result.mode == "automatic"
    assert result.labels.shape == case.image.shape[1:] and result.labels.dtype == np.uint8
    assert result.geometry == case.geometry
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3}
    assert set(result.probabilities) == {1, 2, 3}
    assert all(p.shape == result.labels.shape for p in result.probabilities.values())
    # every prompt PCSW produced lies on the preprocessed grid's slices
    assert all(0 <= k < case.image.shape[1] for _, k, _ in result.prompts)
    assert result.meta["cache"]["encoded_slices"] == case.image.shape[1]  # each slice encoded once
