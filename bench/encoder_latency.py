"""Benchmark: image-encoder latency per slice for each registered size, and the embedding cache's
interactive speed-up (second click on the same volume vs first), measured side by side in one run.

    python bench/encoder_latency.py [--sizes 256 512 1024] [--models ...] [--repeats 3] [--device cuda]
                                    [--out bench/results]

Random-init weights (no downloads); CPU threads as torch chooses. Writes ``encoder_latency.json`` and
prints a table. Large models at 1024 px take tens of seconds per slice on 2 CPU cores: pass
``--models`` to choose.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medsam_kit.infer import Segmenter
from medsam_kit.models import load_model

DEFAULT_MODELS = ("sam2.1_hiera_tiny_test", "sam_vit_tiny_test", "sam2.1_hiera_tiny", "sam_vit_b")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_seconds(name: str, size: int, repeats: int, device: str = "cpu") -> float:
    """Best-of-``repeats`` seconds for one ``(1, 3, size, size)`` slice through the image encoder."""
    model = load_model(name, image_size=size, device=device).eval()
    image = torch.rand(1, 3, size, size, device=device)
    best = float("inf")
    with torch.inference_mode():
        model.encode(image)  # warm-up (allocations, lazy init, kernel selection)
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode(image)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best


def cache_speedup(name: str, size: int, device: str = "cpu") -> dict[str, float]:
    """First vs second box prompt on the same 20-slice volume through :class:`Segmenter` (automatic-free path)."""
    segmenter = Segmenter(load_model(name, image_size=size).eval(), device=device)
    rng = np.random.default_rng(0)
    volume = rng.random((20, size, size)).astype(np.float32)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        segmenter.segment_slice(volume[10], box=box)
        _sync(device)
        timings.append(time.perf_counter() - start)
    return {"first_s": timings[0], "second_s": timings[1], "speedup": timings[0] / timings[1],
            "encoder_calls": segmenter.cache_stats()["encoder_calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        for size in args.sizes:
            seconds = encoder_seconds(name, size, args.repeats, args.device)
            rows.append({"model": name, "size": size, "encoder_s": round(seconds, 4)})
            print(f"{name:26s} {size:5d} px  encoder {seconds * 1000:9.1f} ms/slice", flush=True)
    cache = {}
    for name in args.models:  # interactive speed-up at the smallest size, per model
        cache[name] = stats = cache_speedup(name, min(args.sizes), args.device)
        print(f"cache {name} @ {min(args.sizes)} px: first click {stats['first_s'] * 1000:.1f} ms, second "
              f"{stats['second_s'] * 1000:.1f} ms -> {stats['speedup']:.1f}x faster "
              f"({stats['encoder_calls']} encoder call in total)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor()
                                                                                   or platform.machine())
    result = {"encoder": rows, "cache": cache, "torch_threads": torch.get_num_threads(), "device": args.device,
              "machine": machine}
    (args.out / "encoder_latency.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'encoder_latency.json'}")


if __name__ == "__main__":
    main()
