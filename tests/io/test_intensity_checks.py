"""One voxel-value check (:func:`medsam_kit.io.check_intensities`) for the server, the Python API and ``predict``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medsam_kit.io import Geometry, Volume, check_intensities, write_volume


@pytest.mark.parametrize("array,expected", [
    (np.array([[[1.0, np.nan]]], np.float32), "1 NaN or infinite voxel(s)"),
    (np.array([[[np.inf, -np.inf, 0.0]]]), "2 NaN or infinite voxel(s)"),
    (np.array([[[1e300]]]), "beyond the float32 range"),
    (np.ones((1, 2, 2), np.complex64), "complex64 voxels"),
    (np.array([[["a"]]]), "<U1 voxels"),
])
def test_check_intensities_refuses_with_one_line_naming_the_source(array, expected):
    with pytest.raises(ValueError) as info:
        check_intensities(array, "scan.nii.gz")
    assert str(info.value).startswith("scan.nii.gz holds") and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_check_intensities_accepts_real_finite_values():
    for array in (np.zeros((2, 3, 4), np.int16), np.ones((2, 2, 2), bool), np.full((1, 2, 2), 3e38),
                  np.zeros((0, 2, 2), np.float32), np.array([[[np.finfo(np.float32).max]]], np.float64)):
        check_intensities(array, "ok")


@pytest.fixture(scope="module")
def segmenter():
    import torch

    from medsam_kit.infer import Segmenter
    from medsam_kit.models import load_model

    torch.manual_seed(0)
    return Segmenter(load_model("sam2.1_hiera_tiny_test", in_channels=1, num_classes=2))


def test_segment_volume_refuses_nan_and_infinite_voxels(segmenter):
    image = np.random.default_rng(0).normal(100, 20, (3, 32, 32)).astype(np.float32)
    image[1, 5, 7] = np.nan
    with pytest.raises(ValueError, match="the input volume holds 1 NaN or infinite voxel"):
        segmenter.segment_volume(image)
    image[1, 5, 7] = np.inf
    with pytest.raises(ValueError, match="scan.nrrd holds 1 NaN"):
        segmenter.segment_volume(Volume(image, Geometry(), {"filename": "scan.nrrd"}))
    with pytest.raises(ValueError, match="the input slice holds 1 NaN"):
        segmenter.segment_slice(image[1], box=(2, 2, 20, 20))
    image[1, 5, 7] = 0.0
    assert segmenter.segment_volume(image).labels.shape == (3, 32, 32)  # the same volume, finite, is segmented


def test_predict_on_a_nan_holding_nifti_exits_with_one_line(tmp_path):
    image = np.random.default_rng(0).normal(100, 20, (3, 24, 24)).astype(np.float32)
    image[0, 0, :4] = np.nan
    source = write_volume(tmp_path / "nan.nii.gz", Volume(image))
    out = tmp_path / "out" / "pred.nii.gz"
    command = [sys.executable, "-m", "medsam_kit", "predict"]
    help_text = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300).stdout
    flags = ["--random-weights"] if "--random-weights" in help_text else []
    result = subprocess.run([*command, "--model", "sam_vit_tiny_test", *flags, "--input", str(source),
                             "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode not in (0, 139, -11), result
    errors = [line for line in result.stderr.strip().splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "4 NaN or infinite voxel(s)" in errors[0] and not out.exists()
