"""Benchmark: ``medsam-kit serve`` through HTTP — first vs next prompt latency, and server memory per open volume.

    python bench/serve_latency.py [--model sam2.1_hiera_tiny_test] [--device cpu] [--shape 20 256 256]
                                  [--repeats 5] [--volumes 8] [--out bench/results]

Starts the server as a real subprocess (``python -m medsam_kit serve``, loopback, a token) with a
random-init model (no downloads), then, in one run on one server:

* **latency**: uploads a ``Z x Y x X`` int16 volume (default 20 x 256 x 256, oblique geometry) and sends
  the same box prompt ``--repeats + 1`` times, then a different point prompt. The first prompt embeds
  the slices it touches (lazily); the next ones reuse them. Reported per request: wall time of the HTTP
  round trip (client side), the server's model time and the slices it encoded (``X-MedSAM-Stats``), and
  the ratio first / median of the next ones.
* **memory**: the server process's resident memory (``VmRSS``, Linux) after start, then after each of
  ``--volumes`` more uploads, each followed by one prompt (so its embeddings are held too), next to the
  number of volumes the server lists as open (fewer than uploaded once ``--max-memory-mb`` evicts) and
  the bytes it charges to them (``GET /v1/volumes``). With ``--device cuda`` the embeddings may sit in
  GPU memory, which RSS does not show; the charged bytes count them either way.

Writes ``serve_latency_<model>.json`` under ``--out`` (with ``OMP_NUM_THREADS`` and the load average at the
start: on a CPU busy with other work, torch's default OpenMP threads spin against it and every prompt
gets many times slower; ``OMP_NUM_THREADS=1`` gives the honest single-core numbers there) and prints
both tables. The real-size SAM-2.1 tiny (1024 px) shows what the cache is for::

    OMP_NUM_THREADS=1 python bench/serve_latency.py --model sam2.1_hiera_tiny --repeats 3 --volumes 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from medsam_kit.io import Geometry, Volume, write_volume

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A rotated, anisotropic grid: the server works on any geometry, the bench should not flatter it.
OBLIQUE = Geometry((0.7, 0.7, 3.0), (-90.0, 110.0, -40.0),
                   ((0.9659258, -0.2588190, 0.0), (0.2588190, 0.9659258, 0.0), (0.0, 0.0, 1.0)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``/proc/<pid>/status``; NaN where there is no /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """int16 ``(Z, Y, X)`` volume: noise with a bright ellipsoid in the middle (something to segment)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    inside = (((z - shape[0] / 2) / (shape[0] / 3)) ** 2 + ((y - shape[1] / 2) / (shape[1] / 5)) ** 2
              + ((x - shape[2] / 2) / (shape[2] / 4)) ** 2) <= 1
    return (rng.normal(100, 25, shape) + 400 * inside).astype(np.int16)


class Server:
    """``python -m medsam_kit serve`` in a subprocess on a free loopback port."""

    def __init__(self, model: str, device: str, max_memory_mb: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "medsam_kit", "serve", "--model", model, "--in-channels", "1",
                   "--port", str(self.port), "--device", device, "--token", TOKEN,
                   "--max-memory-mb", str(max_memory_mb)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.communicate()[1][-2000:]}")
            try:
                if httpx.get(f"{self.base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 300 s")
            time.sleep(0.2)
        self.client = httpx.Client(base_url=self.base, headers=AUTH, timeout=600)

    def upload(self, path: Path) -> str:
        response = self.client.post("/v1/volumes", params={"filename": path.name}, content=path.read_bytes(),
                                    headers={"Content-Type": "application/octet-stream"})
        response.raise_for_status()
        return response.json()["id"]

    def segment(self, volume_id: str, prompt: dict) -> dict:
        start = time.perf_counter()
        response = self.client.post(f"/v1/volumes/{volume_id}/segment", params={"output": "nrrd"}, json=prompt)
        wall = time.perf_counter() - start
        response.raise_for_status()
        stats = json.loads(response.headers["X-MedSAM-Stats"])
        return {"wall_s": round(wall, 4), "model_s": stats["seconds"], "encoded_slices": stats["encoded_slices"]}

    def stop(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _prompts(shape: tuple[int, int, int]) -> tuple[dict, dict]:
    z, y, x = shape
    k = z // 2
    box = [x // 4, 2 * y // 5, 3 * x // 4, 3 * y // 5]
    box_prompt = {"coordinates": "voxel", "labels": {"class_1": {str(k): {"boxes": [box]}}}}
    point_prompt = {"coordinates": "voxel", "labels": {"class_1": {str(k + 1): {
        "points": [[x // 2, y // 2], [x // 10, y // 10]], "point_labels": [1, 0]}}}}
    return box_prompt, point_prompt


def latency(server: Server, folder: Path, shape: tuple[int, int, int], repeats: int) -> dict:
    path = write_volume(folder / "latency.nrrd", Volume(phantom(shape, 0), OBLIQUE))
    start = time.perf_counter()
    volume_id = server.upload(path)
    upload_s = time.perf_counter() - start
    box_prompt, point_prompt = _prompts(shape)
    first = server.segment(volume_id, box_prompt)
    nexts = [server.segment(volume_id, box_prompt) for _ in range(repeats)]
    other = server.segment(volume_id, point_prompt)
    median = statistics.median(n["wall_s"] for n in nexts)
    server.client.delete(f"/v1/volumes/{volume_id}")
    return {"shape_zyx": list(shape), "file_bytes": path.stat().st_size, "upload_s": round(upload_s, 4),
            "first": first, "next": nexts, "other_prompt": other, "next_median_wall_s": median,
            "ratio_first_to_next": round(first["wall_s"] / median, 2)}


def memory(server: Server, folder: Path, shape: tuple[int, int, int], volumes: int) -> list[dict]:
    """One row per upload: volumes the server lists as open (fewer than uploaded once ``--max-memory-mb``
    evicts), its RSS and the bytes it charges to them (voxels + embeddings)."""
    box_prompt, _ = _prompts(shape)
    rows = [{"uploaded": 0, "open_volumes": 0, "rss_mb": round(rss_mb(server.process.pid), 1), "charged_mb": 0.0}]
    for n in range(1, volumes + 1):
        path = write_volume(folder / f"memory_{n}.nrrd", Volume(phantom(shape, n), OBLIQUE))
        volume_id = server.upload(path)
        server.segment(volume_id, box_prompt)  # its embeddings count too
        listed = server.client.get("/v1/volumes").json()["volumes"]
        rows.append({"uploaded": n, "open_volumes": len(listed), "rss_mb": round(rss_mb(server.process.pid), 1),
                     "charged_mb": round(sum(v["bytes"] for v in listed) / 2**20, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_tiny_test", help="registry model (random init)")
    parser.add_argument("--device", default="cpu", help="server device: cpu (default), cuda, auto")
    parser.add_argument("--shape", type=int, nargs=3, default=[20, 256, 256], metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=5, help="next prompts timed after the first (default 5)")
    parser.add_argument("--volumes", type=int, default=8, help="volumes opened for the memory table (default 8)")
    parser.add_argument("--max-memory-mb", type=int, default=4096, help="the server's session bound")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    shape = tuple(args.shape)
    load_average = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None

    server = Server(args.model, args.device, args.max_memory_mb)
    try:
        info = server.client.get("/v1/info").json()
        with tempfile.TemporaryDirectory() as tmp:
            lat = latency(server, Path(tmp), shape, args.repeats)
            mem = memory(server, Path(tmp), shape, args.volumes)
    finally:
        server.stop()

    print(f"\n{args.model} ({info['model']['image_size']} px) on {args.device}, volume "
          f"{shape[0]}x{shape[1]}x{shape[2]} (Z x Y x X) through HTTP:")
    print(f"  {'request':<22}{'wall ms':>10}{'model ms':>10}{'encoded':>9}")
    rows = [("first prompt", lat["first"])] + [(f"next prompt {n + 1}", r) for n, r in enumerate(lat["next"])]
    rows.append(("other prompt (points)", lat["other_prompt"]))
    for name, r in rows:
        print(f"  {name:<22}{r['wall_s'] * 1000:>10.1f}{r['model_s'] * 1000:>10.1f}{r['encoded_slices']:>9d}")
    print(f"  first / median next = {lat['ratio_first_to_next']:.1f}x   (upload {lat['upload_s'] * 1000:.0f} ms, "
          f"{lat['file_bytes'] / 2**20:.1f} MiB file)")
    print(f"\n  {'uploaded':>9}{'open volumes':>14}{'server RSS MiB':>16}{'charged MiB':>13}")
    for row in mem:
        print(f"  {row['uploaded']:>9d}{row['open_volumes']:>14d}{row['rss_mb']:>16.1f}{row['charged_mb']:>13.1f}")
    growth = (mem[-1]["rss_mb"] - mem[0]["rss_mb"]) / max(1, mem[-1]["open_volumes"])
    print(f"  RSS growth per open volume: {growth:.1f} MiB")
    if mem[-1]["open_volumes"] < mem[-1]["uploaded"]:
        print(f"  (the server evicted {mem[-1]['uploaded'] - mem[-1]['open_volumes']} volume(s) to stay under "
              f"--max-memory-mb {args.max_memory_mb})")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "image_size": info["model"]["image_size"], "device": args.device,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_start": load_average,
              "latency": lat, "memory": mem, "rss_growth_per_volume_mb": round(growth, 1)}
    out = args.out / f"serve_latency_{args.model}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
