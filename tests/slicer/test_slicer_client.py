"""MedSAMKitLib.client (and the module's Logic) against a REAL ``medsam-kit serve`` app on loopback.

The server is ``medsam_kit.serve.create_app`` around a tiny random-init SAM-2.1 run by uvicorn in a
thread; requests go through real sockets with ``urllib``, exactly as inside Slicer. Random weights:
the tests assert geometry, names, colours, encoder work and error handling, never segmentation quality.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time

import numpy as np
import pytest
from conftest import oblique_ijk_to_ras
from MedSAMKitLib import (
    MedSAMKitClient,
    MedSAMKitError,
    RoiBox,
    ServerInfo,
    grid_difference,
    prompt_document,
    write_nrrd,
)
from MedSAMKitLib.geometry import geometry_to_matrix, ijk_to_ras

from medsam_kit.io import Geometry, read_volume

TOKEN = "slicer-test-token"
LABEL_NAMES = {0: "background", 1: "LV", 2: "MYO"}
SHAPE = (6, 40, 48)  # (Z, Y, X)
MATRIX = oblique_ijk_to_ras()


def blob_volume(shape=SHAPE, seed=0) -> np.ndarray:
    """int16 ``(Z, Y, X)`` noise with a bright ellipsoid around voxel (i, j) = (24, 20)."""
    k, j, i = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    blob = ((i - 24) / 9.0) ** 2 + ((j - 20) / 7.0) ** 2 + ((k - 3) / 2.5) ** 2 <= 1
    return (blob * 600 + np.random.default_rng(seed).normal(100, 15, shape)).astype(np.int16)


class _Thread:
    """Run a server object's ``run``/``serve_forever`` in a daemon thread."""

    def __init__(self, target):
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()


@pytest.fixture(scope="module")
def server_url():
    """Base URL of a live medsam-kit server (token ``TOKEN``, 8 MB upload limit) on a free loopback port."""
    import torch
    import uvicorn

    from medsam_kit.infer import Segmenter
    from medsam_kit.models import load_model
    from medsam_kit.serve.app import create_app

    torch.manual_seed(0)
    model = load_model("sam2.1_hiera_tiny_test", image_size=64, in_channels=1, num_classes=2)
    app = create_app(Segmenter(model, label_names=LABEL_NAMES), token=TOKEN, max_upload_bytes=8 * 2**20,
                     model_name="tiny-test")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    runner = _Thread(server.run)
    deadline = time.monotonic() + 60
    while not server.started:
        assert runner.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    runner.thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server_url):
    return MedSAMKitClient(server_url, TOKEN, timeout=30, segment_timeout=120)


@pytest.fixture(scope="module")
def uploaded(client):
    """The blob volume uploaded once on the oblique grid: ``(UploadedVolume, progress reports)``."""
    reports = []
    answer = client.upload(write_nrrd(blob_volume(), MATRIX), "blob case.nrrd",
                           progress=lambda f, m: reports.append((f, m)))
    yield answer, reports
    with contextlib.suppress(MedSAMKitError):  # a test may have deleted it already
        client.delete(answer.id)


def lv_prompts(include_ijk, coordinates="voxel"):
    steps = np.linalg.norm(MATRIX[:3, :3], axis=0)
    roi = RoiBox(tuple(ijk_to_ras([24, 20, 3], MATRIX)), tuple(np.array([10, 8, 0.5]) * steps),
                 tuple(map(tuple, MATRIX[:3, :3] / steps)), "box")
    return prompt_document("LV", MATRIX, SHAPE, include_ras=ijk_to_ras(include_ijk, MATRIX), rois=[roi],
                           coordinates=coordinates)


# --------------------------------------------------------------------------------------- server info
def test_health_info_and_token(server_url, client):
    assert MedSAMKitClient(server_url).health() == {"status": "ok"}  # no token needed
    with pytest.raises(MedSAMKitError, match=r"HTTP 401.*set the token the server was started with") as caught:
        MedSAMKitClient(server_url).info()
    assert caught.value.status == 401 and not caught.value.server_down
    info = client.info()
    assert info.api_version == 1 and info.model_name == "tiny-test" and info.in_channels == 1
    assert info.channels == ("channel_0",) and info.accepted_channels == (1,)
    assert [(lb.value, lb.name) for lb in info.labels] == [(1, "LV"), (2, "MYO")]
    assert info.labels[0].color == (31, 119, 180)  # the server's fixed palette (tab10)
    assert info.max_upload_bytes == 8 * 2**20 and "seg.nrrd" in info.formats
    assert "structures: LV, MYO" in info.summary()


def test_server_down_timeout_and_foreign_server_are_told_apart():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(MedSAMKitError, match=r"cannot reach the medsam-kit server at http://127\.0\.0\.1:\d+ "
                                             r"\(connection refused\).*medsam-kit serve") as caught:
        MedSAMKitClient(f"127.0.0.1:{closed_port}").health()
    assert caught.value.server_down and caught.value.kind == "unreachable"

    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        with pytest.raises(MedSAMKitError, match=r"no answer from .* within 0\.3 s while checking") as caught:
            MedSAMKitClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3).health()
        assert caught.value.kind == "timeout" and not caught.value.server_down
        assert "check that the server is not stuck" in str(caught.value)  # raising Timeout would not help here
        # a segmentation waits segment_timeout (the panel's Timeout), and the message says how to raise it
        with pytest.raises(MedSAMKitError, match=r"within 0\.4 s while auto-segmenting.*raise the timeout "
                                                 r"\(MedSAM Kit panel: Server > Timeout") as caught:
            MedSAMKitClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=30, segment_timeout=0.4).auto("a")
        assert caught.value.kind == "timeout"
        with pytest.raises(MedSAMKitError, match=r"within 0\.4 s while uploading the volume.*raise the timeout"):
            MedSAMKitClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=30,
                            segment_timeout=0.4).upload(b"NRRD0004", "a.nrrd")  # the server reads before answering

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's handler name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>a web page</html>" if self.path == "/v1/health" else b'{"hello": 1}')

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Html)
    _Thread(other.serve_forever)
    try:
        foreign = MedSAMKitClient(f"http://127.0.0.1:{other.server_address[1]}")
        with pytest.raises(MedSAMKitError, match="did not answer with JSON") as caught:
            foreign.health()
        assert caught.value.kind == "protocol"
        with pytest.raises(MedSAMKitError, match="did not answer like medsam-kit serve"):
            foreign.info()
    finally:
        other.shutdown()
        other.server_close()

    for bad in ("", "ftp://host:21", "http://host:8000/?x=1"):
        with pytest.raises(MedSAMKitError, match="URL"):
            MedSAMKitClient(bad)


def test_the_server_answers_the_client_under_localhost(server_url):
    # the client sends Host localhost:PORT and no Origin: the server's DNS rebinding / CSRF checks let it in
    port = server_url.rsplit(":", 1)[1]
    info = MedSAMKitClient(f"http://localhost:{port}", TOKEN, timeout=30).info()
    assert info.model_name == "tiny-test"


def test_a_refused_host_name_says_how_to_fix_it():
    detail = ("Host 'gpu-box:8000' is not a name of this server (a DNS rebinding page?); connect to 127.0.0.1, or "
              "start the server with --allowed-host gpu-box to answer to that name")

    class Refusing(http.server.BaseHTTPRequestHandler):  # what medsam-kit serve answers to an unknown Host name
        def do_GET(self):  # noqa: N802 - http.server's handler name
            body = json.dumps({"detail": detail}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Refusing)
    _Thread(other.serve_forever)
    try:
        with pytest.raises(MedSAMKitError, match=r"HTTP 403\): Host 'gpu-box:8000' .* --allowed-host") as caught:
            MedSAMKitClient(f"http://127.0.0.1:{other.server_address[1]}", TOKEN).info()
        assert caught.value.kind == "http" and caught.value.status == 403 and "SSH tunnel" in str(caught.value)
    finally:
        other.shutdown()
        other.server_close()


# ---------------------------------------------------------------------------------- volume round trip
def test_upload_keeps_the_oblique_geometry(client, uploaded):
    answer, reports = uploaded
    assert answer.shape_zyx == SHAPE and answer.channels == 1
    assert grid_difference(geometry_to_matrix(answer.geometry), MATRIX) == ""
    assert Geometry.from_dict(answer.geometry).almost_equal(Geometry.from_affine_ras(MATRIX))
    assert reports and reports[-1][0] == 1.0 and reports[-1][1].startswith("Uploading") and "kB" in reports[-1][1]
    assert answer.id in [v["id"] for v in client.volumes()]
    assert client.volume(answer.id)["shape_zyx"] == list(SHAPE)


def test_prompted_segment_on_the_uploaded_grid_then_no_encoder_work(client, uploaded):
    answer, _ = uploaded
    first = client.segment(answer.id, lv_prompts([[24, 20, 3]]), progress=lambda f, m: None)
    image = first.read()
    assert first.filename == "labels.seg.nrrd"
    assert image.array.shape == SHAPE and image.array.dtype == np.uint8
    assert set(np.unique(image.array)) <= {0, 1}  # only the prompted label
    assert grid_difference(image.ijk_to_ras, MATRIX) == ""  # the label map lies on the volume's grid
    assert [(lb.value, lb.name, lb.color) for lb in first.labels] == [(1, "LV", (31, 119, 180)),
                                                                      (2, "MYO", (255, 127, 14))]
    assert first.stats["encoded_slices"] >= 1 and first.stats["seconds"] > 0
    again = client.segment(answer.id, lv_prompts([[22, 21, 3], [30, 18, 3]]))
    assert again.stats["encoded_slices"] == 0  # embeddings of this volume are reused: interactive speed
    world = client.segment(answer.id, lv_prompts([[24, 20, 3]], coordinates="world"))
    assert world.read().array.shape == SHAPE


def test_seg_nrrd_reads_in_slicerio_with_names_colours_geometry(client, uploaded, tmp_path):
    import slicerio

    answer, _ = uploaded
    result = client.segment(answer.id, lv_prompts([[24, 20, 3]]))
    path = tmp_path / result.filename
    path.write_bytes(result.content)
    segmentation = slicerio.read_segmentation(str(path))
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert set(segments) == {"LV", "MYO"} and segments["LV"]["labelValue"] == 1
    np.testing.assert_allclose(segments["MYO"]["color"], np.array([255, 127, 14]) / 255, atol=1e-6)
    np.testing.assert_allclose(segmentation["ijkToLPS"], Geometry.from_affine_ras(MATRIX).affine_lps(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(segmentation["voxels"]).T, result.read().array)


@pytest.mark.parametrize("output, suffix", [("nrrd", ".nrrd"), ("nifti", ".nii.gz")])
def test_auto_in_every_format_on_the_volume_grid(client, uploaded, tmp_path, output, suffix):
    answer, _ = uploaded
    result = client.auto(answer.id, output=output)
    assert result.filename.endswith(suffix)
    path = tmp_path / result.filename
    path.write_bytes(result.content)
    volume = read_volume(path)  # what any other tool would read
    assert volume.array.shape == SHAPE and set(np.unique(volume.array)) <= {0, 1, 2}
    assert volume.geometry.almost_equal(Geometry.from_affine_ras(MATRIX))  # NIfTI: float32 header, within tolerance
    if output == "nrrd":
        assert grid_difference(result.read().ijk_to_ras, MATRIX) == ""
    else:
        with pytest.raises(MedSAMKitError, match="request output='seg.nrrd'"):
            result.read()


def test_bad_requests_come_back_as_one_line_reasons(client, uploaded):
    answer, _ = uploaded
    with pytest.raises(MedSAMKitError, match="HTTP 422.*RV") as caught:  # unknown structure
        client.segment(answer.id, {"coordinates": "voxel", "labels": {"RV": {"3": {"points": [[5, 5]]}}}})
    assert caught.value.status == 422 and "\n" not in str(caught.value)
    with pytest.raises(MedSAMKitError, match="HTTP 422"):  # outside the volume
        client.segment(answer.id, {"coordinates": "voxel", "labels": {"LV": {"3": {"points": [[500, 5]]}}}})
    with pytest.raises(MedSAMKitError, match='must state "coordinates"'):
        client.segment(answer.id, {"labels": {}})
    with pytest.raises(MedSAMKitError, match="HTTP 415.*upload a .nrrd"):
        client.upload(b"GIF89a", "picture.gif")
    with pytest.raises(MedSAMKitError, match="HTTP 400"):
        client.upload(b"NRRD0004\nnot a header\n\n", "broken.nrrd")
    with pytest.raises(MedSAMKitError, match=r"huge.nrrd is 9.0 MiB, over the server's upload limit of 8.0 MiB") \
            as caught:  # known from /v1/info: refused before sending 9 MiB the server would cut off
        client.upload(bytes(9 * 2**20), "huge.nrrd")
    assert caught.value.kind == "usage"


def test_a_connection_cut_mid_upload_is_reported_as_dropped():
    with socket.socket() as rude:  # accepts, then closes without reading: what a server does to an oversized body
        rude.bind(("127.0.0.1", 0))
        rude.listen(1)

        def cut():
            connection, _ = rude.accept()
            connection.close()

        _Thread(cut)
        with pytest.raises(MedSAMKitError, match=r"connection to .* broke while uploading the volume \(the server "
                                                 r"stopped, or the upload is over its size limit\)") as caught:
            MedSAMKitClient(f"http://127.0.0.1:{rude.getsockname()[1]}", timeout=10).upload(bytes(8 * 2**20), "a.nrrd")
    assert caught.value.kind == "dropped" and not caught.value.server_down


def test_delete_forgets_the_volume(client):
    answer = client.upload(write_nrrd(blob_volume(seed=3), MATRIX), "to-delete.nrrd")
    client.delete(answer.id)
    assert answer.id not in [v["id"] for v in client.volumes()]
    with pytest.raises(MedSAMKitError, match="HTTP 404.*uploaded again on the next try") as caught:
        client.auto(answer.id)
    assert caught.value.status == 404


# ------------------------------------------------------------------------- the module's Logic, end to end
def test_logic_flow_against_the_server(server_url, medsamkit, scene):
    import slicer_stubs

    logic = medsamkit.MedSAMKitLogic()
    info = logic.connect(server_url, TOKEN)
    assert [lb.name for lb in info.labels] == ["LV", "MYO"]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    transform.to_parent[:3, 3] = [4.0, -2.0, 9.0]  # the volume sits under a linear transform
    volume = slicer_stubs.addVolumeFromArray(blob_volume(seed=1), MATRIX, "CT blob")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    world = transform.to_parent @ MATRIX
    include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    include.AddControlPoint(ijk_to_ras([24, 20, 3], world))  # markups are world positions

    volume_input = logic.volumeInput(volume)
    outcome = logic.requestSegmentation(volume_input, logic.promptDocument(volume, "LV", include))
    assert outcome.onlyValues == [1] and grid_difference(outcome.ijkToRas, world) == ""
    node = logic.applySegmentation(outcome, volume)
    segmentation = node.GetSegmentation()
    lv = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("LV"))
    np.testing.assert_array_equal(lv.mask, outcome.labels == 1)
    assert segmentation.GetSegmentIdBySegmentName("MYO") == ""  # only the prompted structure

    volume_id = logic.ensureUploaded(volume_input)
    logic.client.delete(volume_id)  # the server loses the volume (eviction, restart)...
    automatic = logic.requestSegmentation(volume_input)  # ...and the Logic uploads it again by itself
    assert logic.ensureUploaded(volume_input) != volume_id
    logic.applySegmentation(automatic, volume, node)
    assert [segmentation.GetNthSegment(n).GetName() for n in range(2)] == ["LV", "MYO"]

    two = slicer_stubs.addVolumeFromArray(np.stack([blob_volume()] * 2, axis=-1), MATRIX, "two channels",
                                          "vtkMRMLVectorVolumeNode")
    open_before = [v["id"] for v in logic.client.volumes()]
    with pytest.raises(MedSAMKitError, match=r"'two channels' has 2 channel\(s\) but the model takes 1 — the "
                                             r"model's channels are channel_0: select one volume per channel"):
        logic.requestSegmentation(logic.volumeInput(two))  # refused from /v1/info, before any upload
    assert [v["id"] for v in logic.client.volumes()] == open_before
    logic.info = ServerInfo(**{**info.__dict__, "accepted_channels": (1, 2)})  # stale info: the server decides
    with pytest.raises(MedSAMKitError, match=r"HTTP 422.*2 channel.*the model's channels are channel_0") as caught:
        logic.requestSegmentation(logic.volumeInput(two))
    assert caught.value.status == 422
    logic.info = info

    volume_id = logic.ensureUploaded(volume_input)
    logic.forgetVolume(volume_input)
    assert volume_id not in [v["id"] for v in logic.client.volumes()]  # deleted on the server...
    assert logic.ensureUploaded(volume_input) != volume_id  # ...and forgotten here: the next use uploads again
