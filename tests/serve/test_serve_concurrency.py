"""Several clients at once against a real uvicorn server on loopback: results equal to a serial run."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from serve_helpers import AUTH, TOKEN, box_prompt, live_server, random_volume, volume_bytes

from medsam_kit.io import read_volume
from medsam_kit.serve import create_app

CLIENTS = 4
SHAPE = (3, 32, 32)
PROMPTS = [box_prompt(1, (6, 6, 26, 26)),
           {"coordinates": "voxel", "labels": {"tumour": {"0": {"points": [[16, 16], [2, 30]], "point_labels": [1, 0]}},
                                               "liver": {"2": {"boxes": [[8, 4, 30, 20]]}}}}]


def _session(base: str, data: bytes, tmp_path, name: str, barrier: threading.Barrier | None = None) -> dict:
    """One client's work: upload, two prompts, a listing, delete; returns the label arrays and encoder counts."""
    results = {"labels": [], "encoded": []}
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
        if barrier is not None:
            barrier.wait(30)  # all clients start together
        response = client.post("/v1/volumes", params={"filename": f"{name}.nrrd"}, content=data,
                               headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        volume_id = response.json()["id"]
        for n, prompt in enumerate(PROMPTS):
            response = client.post(f"/v1/volumes/{volume_id}/segment", params={"output": "nrrd"}, json=prompt)
            assert response.status_code == 200, response.text
            path = tmp_path / f"{name}_{n}.nrrd"
            path.write_bytes(response.content)
            results["labels"].append(read_volume(path).array)
            results["encoded"].append(json.loads(response.headers["X-MedSAM-Stats"])["encoded_slices"])
        assert volume_id in [v["id"] for v in client.get("/v1/volumes").json()["volumes"]]
        assert client.delete(f"/v1/volumes/{volume_id}").status_code == 204
    return results


def test_concurrent_clients_get_the_serial_results(make_segmenter, tmp_path):
    volumes = [volume_bytes(tmp_path, random_volume(SHAPE, seed=10 + n)) for n in range(CLIENTS)]

    with live_server(create_app(make_segmenter(), token=TOKEN)) as base:
        serial = [_session(base, data, tmp_path, f"serial{n}") for n, data in enumerate(volumes)]

    segmenter = make_segmenter()  # a fresh cache: every client's first prompt encodes again
    barrier = threading.Barrier(CLIENTS)
    with live_server(create_app(segmenter, token=TOKEN)) as base, ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(_session, base, data, tmp_path, f"parallel{n}", barrier)
                   for n, data in enumerate(volumes)]
        parallel = [future.result(timeout=300) for future in futures]
        with httpx.Client(base_url=base, headers=AUTH) as client:
            assert client.get("/v1/volumes").json() == {"volumes": []}

    for one, other in zip(serial, parallel, strict=True):
        assert one["encoded"] == other["encoded"] and one["encoded"][0] > 0
        for a, b in zip(one["labels"], other["labels"], strict=True):
            assert a.shape == SHAPE
            np.testing.assert_array_equal(a, b)
    assert segmenter.cache_stats()["entries"] == 0  # every client deleted its volume and its embeddings
