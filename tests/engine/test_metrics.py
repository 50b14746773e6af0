"""Metric values on masks with known answers, empty-mask conventions, and a MONAI cross-check."""

from __future__ import annotations

import math

import monai.metrics as monai_metrics
import numpy as np
import pytest
import torch
from scipy import ndimage

from medsam_kit.data.datasets import BRATS
from medsam_kit.engine.metrics import (
    METRIC_NAMES,
    class_metrics,
    dice_iou,
    mask_metrics,
    surface_distances,
    surface_voxels,
)

SPACING = (3.0, 1.25, 0.5)  # (z, y, x) mm: strongly anisotropic, like a short-axis MRI stack


def _shell_size(n: int) -> int:
    return n**3 - (n - 2) ** 3


def _offset_cubes(n: int, k: int, axis: int, shape=(24, 24, 24), start=4) -> tuple[np.ndarray, np.ndarray]:
    """Cube of side ``n`` and the same cube moved by ``k`` voxels along ``axis``."""
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    box = [slice(start, start + n)] * 3
    a[tuple(box)] = True
    box[axis] = slice(start + k, start + k + n)
    b[tuple(box)] = True
    return a, b


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_offset_cubes_have_exact_dice_iou_and_hd95(axis):
    n, k = 10, 2
    pred, gt = _offset_cubes(n, k, axis)
    m = mask_metrics(pred, gt, SPACING, nsd_tolerance_mm=k * SPACING[axis])
    assert m["dice"] == pytest.approx((n - k) / n, abs=1e-12)
    assert m["iou"] == pytest.approx((n - k) / (n + k), abs=1e-12)
    # The face that leads the shift is k voxels from the other cube's face and nothing is farther;
    # that face is n² of the 488 shell voxels (>5 %), so the 95th percentile is the offset itself.
    assert m["hd95_mm"] == pytest.approx(k * SPACING[axis], abs=1e-12)
    assert m["nsd"] == 1.0  # every distance <= the offset
    assert (m["gt_voxels"], m["pred_voxels"]) == (n**3, n**3)


def test_offset_cubes_nsd_at_zero_tolerance_counts_shared_surface():
    n, k = 10, 2
    pred, gt = _offset_cubes(n, k, axis=0)
    # Shared surface: the side rings (4n - 4 voxels) of the n - k slices both cubes cover.
    shared = (n - k) * (4 * n - 4)
    m = mask_metrics(pred, gt, SPACING, nsd_tolerance_mm=0.0)
    assert m["nsd"] == pytest.approx(shared / _shell_size(n), abs=1e-12)


def test_assd_of_offset_cubes_matches_brute_force():
    pred, gt = _offset_cubes(6, 1, axis=1, shape=(10, 10, 10), start=2)
    points = [np.argwhere(surface_voxels(m)) * np.asarray(SPACING) for m in (pred, gt)]
    pairwise = np.linalg.norm(points[0][:, None, :] - points[1][None, :, :], axis=-1)
    expected = (pairwise.min(axis=1).sum() + pairwise.min(axis=0).sum()) / pairwise.shape[0] / 2
    to_gt, to_pred = surface_distances(pred, gt, SPACING)
    np.testing.assert_allclose(to_gt, pairwise.min(axis=1), atol=1e-12)
    np.testing.assert_allclose(to_pred, pairwise.min(axis=0), atol=1e-12)
    assert mask_metrics(pred, gt, SPACING, 1.0)["assd_mm"] == pytest.approx(expected, abs=1e-12)


def test_surface_is_six_connected_and_includes_the_volume_edge():
    full = np.ones((4, 5, 6), bool)
    assert surface_voxels(full).sum() == full.size - 2 * 3 * 4  # outer shell of the array
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    surface = surface_voxels(cube)
    assert surface.sum() == _shell_size(5)
    # A voxel with only a diagonal background neighbour is not surface (6-, not 26-connectivity).
    notch = cube.copy()
    notch[1, 1, 1] = False
    assert not surface_voxels(notch)[2, 2, 2]


def test_identical_masks_touching_the_edge_score_perfectly():
    mask = np.zeros((5, 8, 8), bool)
    mask[:, :4, 2:] = True
    m = mask_metrics(mask, mask, SPACING, 0.0)
    assert [m[name] for name in METRIC_NAMES] == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_empty_mask_conventions():
    empty, blob = np.zeros((4, 6, 6), bool), np.zeros((4, 6, 6), bool)
    blob[1:3, 2:4, 2:4] = True
    both = mask_metrics(empty, empty, SPACING, 1.0)
    assert [both[m] for m in METRIC_NAMES] == [1.0, 1.0, 0.0, 0.0, 1.0]
    for pred, gt in ((empty, blob), (blob, empty)):
        one = mask_metrics(pred, gt, SPACING, 1.0)
        assert (one["dice"], one["iou"], one["nsd"]) == (0.0, 0.0, 0.0)
        assert math.isnan(one["hd95_mm"]) and math.isnan(one["assd_mm"])
    assert dice_iou(empty, empty) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(empty, blob, SPACING)


def test_bad_inputs_raise_clear_errors():
    a = np.zeros((3, 4, 5), bool)
    with pytest.raises(ValueError, match="shape"):
        mask_metrics(a, np.zeros((3, 4, 6), bool), SPACING, 1.0)
    with pytest.raises(ValueError, match="spacing"):
        mask_metrics(a, a, (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        mask_metrics(a, a, SPACING, -1.0)


def test_class_metrics_scores_labels_and_regions():
    gt = np.zeros((8, 16, 16), np.uint8)
    gt[2:6, 4:12, 4:12] = 2  # edema
    gt[3:5, 6:10, 6:10] = 1  # necrosis inside
    gt[3:5, 6:8, 10:12] = 3  # enhancing
    pred = gt.copy()
    pred[pred == 1] = 3  # NCR called ET: labels wrong, whole tumour still perfect
    classes = BRATS.evaluation_classes()
    assert list(classes) == ["NCR", "ED", "ET", "WT", "TC"]
    scores = class_metrics(pred, gt, classes, SPACING, 1.0)
    assert scores["WT"]["dice"] == 1.0 and scores["TC"]["dice"] == 1.0 and scores["ED"]["dice"] == 1.0
    assert scores["NCR"]["dice"] == 0.0 and math.isnan(scores["NCR"]["hd95_mm"])
    expected_et = mask_metrics(np.isin(pred, (3,)), gt == 3, SPACING, 1.0)
    assert scores["ET"] == expected_et
    assert scores["WT"]["gt_voxels"] == int(np.count_nonzero(gt))


def test_class_metrics_leaves_out_ignore_label_voxels():
    gt = np.zeros((4, 10, 10), np.uint8)
    gt[1:3, 2:8, 2:8] = 1
    gt[:, :, 9] = 255  # unannotated stripe
    pred = gt.copy()
    pred[pred == 255] = 1  # whatever the model says there does not count
    scores = class_metrics(pred, gt, {"fg": (1,)}, SPACING, 1.0, ignore_label=255)
    assert scores["fg"]["dice"] == 1.0 and scores["fg"]["hd95_mm"] == 0.0


# --------------------------------------------------------------------------- MONAI cross-check
def _blob(shape, seed, fraction):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=(1.0, 3.0, 3.0))
    return field > np.quantile(field, 1 - fraction)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated argument, internal to it
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_metrics_agree_with_monai(seed):
    shape, spacing, tolerance = (10, 40, 36), (4.0, 1.1, 0.7), 2.5
    pred, gt = _blob(shape, seed, 0.3), _blob(shape, seed + 100, 0.25)  # blobs reach the volume edges
    ours = mask_metrics(pred, gt, spacing, tolerance)

    def onehot(mask):
        return torch.from_numpy(mask[None, None].astype(np.float32))

    p, g = onehot(pred), onehot(gt)
    reference = {
        "dice": monai_metrics.compute_dice(p, g),
        "iou": monai_metrics.compute_iou(p, g),
        "hd95_mm": monai_metrics.compute_hausdorff_distance(p, g, percentile=95, spacing=spacing),
        "assd_mm": monai_metrics.compute_average_surface_distance(p, g, symmetric=True, spacing=spacing),
        "nsd": monai_metrics.compute_surface_dice(p, g, class_thresholds=[tolerance], spacing=spacing),
    }
    # Same surface definition (6-connected erosion, outside = background) and exact Euclidean
    # distances in both, so the only difference is MONAI's float32 arithmetic.
    for name, value in reference.items():
        assert ours[name] == pytest.approx(float(value.item()), rel=1e-5, abs=1e-6), name


def test_class_metrics_rejects_a_class_without_label_values():
    labels = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="at least one label value"):
        class_metrics(labels, labels, {"nothing": ()}, SPACING, 1.0)
