"""Fuzzing: requests generated from the server's own ``/openapi.json`` (schemathesis) and corrupted volume files.

Against a real uvicorn server on loopback with the token, every answer must be below 500 and every
4xx a one-line ``{"detail": str}``. Examples are bounded (derandomized, no example database) so the
file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import contextlib

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import AUTH, TOKEN, live_server, random_volume, volume_bytes

from medsam_kit.serve import create_app

EXAMPLES = 25


def _bounded(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _check(response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url}: {response.text}"
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail, response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base_url, volume_id)`` of a live server holding one small uploaded volume."""
    import torch
    from serve_helpers import LABELS

    from medsam_kit.infer import Segmenter
    from medsam_kit.models import load_model

    torch.manual_seed(0)
    segmenter = Segmenter(load_model("sam2.1_hiera_tiny_test", in_channels=1, num_classes=2), label_names=LABELS)
    app = create_app(segmenter, token=TOKEN)
    data = volume_bytes(tmp_path_factory.mktemp("fuzz"), random_volume((2, 16, 16)))
    with live_server(app) as base:
        response = httpx.post(f"{base}/v1/volumes", params={"filename": "seed.nrrd"}, content=data, headers=AUTH)
        assert response.status_code == 201
        yield base, response.json()["id"], app, data


def _runs(app, volume_id: str):
    """``(label, strategy, max_examples)`` for every operation: random parameters, and the real volume id."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:
            yield f"{operation.label} {mode.value}", operation.as_strategy(mode, headers=dict(AUTH)), EXAMPLES
            if "{volume_id}" not in operation.path or operation.method.upper() == "DELETE":
                continue  # deleting the real volume would end the other runs early
            if operation.path.endswith("/auto") and mode is not schemathesis.GenerationMode.POSITIVE:
                continue  # only the output format varies, and each automatic pass costs a second
            fixed = {"volume_id": volume_id}
            yield (f"{operation.label} {mode.value} (real id)",
                   operation.as_strategy(mode, headers=dict(AUTH), path_parameters=fixed),
                   3 if operation.path.endswith("/auto") else 2 * EXAMPLES)
        if operation.method.upper() == "POST" and operation.path == "/v1/volumes":
            yield ("upload with a volume suffix", operation.as_strategy(headers=dict(AUTH),
                                                                        query={"filename": "scan.nrrd"}), EXAMPLES)


def _fuzz(base: str, label: str, strategy, examples: int) -> set[int]:
    """Send ``examples`` generated requests; the statuses seen (a 5xx fails the test)."""
    statuses: set[int] = set()

    @_bounded(examples)
    @given(case=strategy)
    def run(case):
        response = case.call(base_url=base, timeout=60)
        statuses.add(response.status_code)
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text}"
        if response.status_code >= 400:
            assert "\n" not in response.json()["detail"], response.text

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # no negative case without parameters
        run()
    return statuses


def test_requests_from_the_openapi_schema_never_get_a_5xx(server):
    base, volume_id, app, _ = server
    seen = {label: _fuzz(base, label, strategy, examples) for label, strategy, examples in _runs(app, volume_id)}
    assert len(seen) >= 16
    # negative cases may not exist (no parameters to break), but every operation got valid requests
    assert all(statuses for label, statuses in seen.items() if "positive" in label), seen
    segment_statuses = set().union(*(s for label, s in seen.items() if "segment" in label and "real id" in label))
    assert 200 in segment_statuses and 422 in segment_statuses  # the fuzzer reached the model and the prompt checks
    with httpx.Client(base_url=base, headers=AUTH) as client:
        assert client.get(f"/v1/volumes/{volume_id}").status_code == 200  # the server still serves


@st.composite
def _corrupted(draw, data: bytes) -> bytes:
    """A volume file cut short, with bytes overwritten, or with bytes inserted."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    junk = draw(st.binary(min_size=1, max_size=16))
    return data[:at] + junk + data[at + (len(junk) if kind == "overwrite" else 0):]


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_corrupted_volume_files_are_refused_with_4xx(server, tmp_path, suffix):
    base, *_ = server
    data = volume_bytes(tmp_path, random_volume((2, 8, 8), seed=4), suffix=suffix)

    @_bounded(EXAMPLES)
    @given(body=_corrupted(data))
    def run(body):
        response = httpx.post(f"{base}/v1/volumes", params={"filename": f"bad{suffix}"}, content=body,
                              headers=AUTH, timeout=60)
        _check(response)
        if response.status_code == 201:  # some corruptions only change voxel values
            assert httpx.delete(f"{base}/v1/volumes/{response.json()['id']}", headers=AUTH).status_code == 204

    run()
