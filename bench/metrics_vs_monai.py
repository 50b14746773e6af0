"""Benchmark: medsam_kit's metrics vs MONAI's on the same label maps, side by side in one run.

medsam_kit computes one distance transform per surface and derives HD95, ASSD and NSD from it;
MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance`` /
``compute_surface_dice`` each recompute their own. This measures what that saves on ACDC-like
multi-class maps (anisotropic, 3 classes) and checks both give the same numbers.

    python bench/metrics_vs_monai.py [--size 256] [--slices 30] [--repeats 3] [--out bench/results]

Prints the time ratio (MONAI / medsam_kit) and writes ``metrics_vs_monai.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from monai import metrics as monai_metrics
from scipy import ndimage

from medsam_kit.engine.metrics import class_metrics

SPACING_ZYX = (8.0, 1.4, 1.4)  # ACDC-like anisotropy
TOLERANCE_MM = 2.0


def make_pair(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Three nested smooth blobs as ground truth, and a shifted, eroded copy as prediction."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), (1, 12, 12))
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(0.3 * zz**2 + yy**2 + xx**2) + 3 * field
    gt = np.zeros(shape, np.uint8)
    for value, r in ((1, 0.6), (2, 0.45), (3, 0.3)):
        gt[radius < r] = value
    pred = np.roll(gt, (0, 2, -1), axis=(0, 1, 2))
    pred[ndimage.binary_erosion(pred == 2, iterations=1) ^ (pred == 2)] = 1
    return pred, gt


def monai_class_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for value in (1, 2, 3):
        p = torch.from_numpy(pred == value)[None, None].float()
        g = torch.from_numpy(gt == value)[None, None].float()
        out[str(value)] = {
            "dice": float(monai_metrics.compute_dice(p, g)),
            "hd95_mm": float(monai_metrics.compute_hausdorff_distance(p, g, percentile=95, spacing=SPACING_ZYX)),
            "assd_mm": float(monai_metrics.compute_average_surface_distance(p, g, symmetric=True,
                                                                            spacing=SPACING_ZYX)),
            "nsd": float(monai_metrics.compute_surface_dice(p, g, class_thresholds=[TOLERANCE_MM],
                                                            spacing=SPACING_ZYX)),
        }
    return out


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="in-plane size (default 256)")
    parser.add_argument("--slices", type=int, default=30, help="number of slices (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats, best is kept (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON result")
    args = parser.parse_args()

    pred, gt = make_pair(np.random.default_rng(0), (args.slices, args.size, args.size))
    classes = {str(v): (v,) for v in (1, 2, 3)}
    ours_s, ours = best_time(lambda: class_metrics(pred, gt, classes, SPACING_ZYX, TOLERANCE_MM), args.repeats)
    monai_s, theirs = best_time(lambda: monai_class_metrics(pred, gt), args.repeats)
    max_diff = max(abs(ours[c][m] - theirs[c][m]) / max(1.0, abs(theirs[c][m]))
                   for c in theirs for m in theirs[c])
    result = {
        "shape_zyx": list(gt.shape), "spacing_zyx": SPACING_ZYX, "classes": 3, "repeats": args.repeats,
        "medsam_kit_s": round(ours_s, 4), "monai_s": round(monai_s, 4), "ratio_monai_over_medsam_kit":
        round(monai_s / ours_s, 2), "max_relative_difference": max_diff, "machine": platform.processor() or
        platform.machine(), "torch_threads": torch.get_num_threads(),
    }
    print(f"{gt.shape} x 3 classes: medsam_kit {ours_s:.3f} s, MONAI {monai_s:.3f} s -> "
          f"MONAI/medsam_kit = {monai_s / ours_s:.2f}x; max relative difference {max_diff:.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_vs_monai.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'metrics_vs_monai.json'}")


if __name__ == "__main__":
    main()
