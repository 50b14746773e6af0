"""HTTP API v1 through FastAPI's TestClient: flows, geometry round trips, Slicer files, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicerio
from serve_helpers import AUTH, LABELS, OBLIQUE, box_prompt, random_volume, upload, volume_bytes

from medsam_kit.io import Geometry, read_volume
from medsam_kit.serve import label_color

SHAPE = (4, 40, 48)


def _labels_from(response, tmp_path, suffix: str):
    path = tmp_path / f"result_{len(list(tmp_path.iterdir()))}{suffix}"
    path.write_bytes(response.content)
    return read_volume(path)


def _one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert "Traceback" not in detail and "medsam-upload-" not in detail
    return detail


# ---------------------------------------------------------------------------- info and auth
def test_health_and_info_describe_the_model(make_client):
    client = make_client()
    assert client.get("/v1/health").json() == {"status": "ok"}  # no token needed
    info = client.get("/v1/info", headers=AUTH).json()
    assert info["api_version"] == 1 and info["model"] == {"name": "sam2.1_hiera_tiny_test", "image_size": 128,
                                                          "in_channels": 1, "num_classes": 2}
    assert info["labels"] == [{"value": 1, "name": "liver", "color": list(label_color(1))},
                              {"value": 2, "name": "tumour", "color": list(label_color(2))}]
    assert info["channels"] == ["channel_0"] and info["accepted_channels"] == [1]
    assert info["formats"] == ["seg.nrrd", "nrrd", "nifti"] and info["coordinates"] == ["voxel", "world"]
    assert info["max_upload_bytes"] > 0


def test_token_is_required_except_for_health(make_client):
    client = make_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        response = client.get("/v1/volumes", headers=headers)
        assert "token" in _one_line_error(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/v1/volumes", headers=AUTH).json() == {"volumes": []}
    assert client.get("/v1/health").status_code == 200
    assert make_client(token=None).get("/v1/volumes").status_code == 200  # loopback default: no token


# ---------------------------------------------------------------------------- the main flow
@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_upload_keeps_shape_and_oblique_geometry(make_client, tmp_path, suffix):
    client = make_client()
    response = upload(client, volume_bytes(tmp_path, random_volume(SHAPE), OBLIQUE, suffix), f"scan{suffix}")
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body["id"]) == 32 and body["shape_zyx"] == list(SHAPE) and body["channels"] == 1
    assert Geometry.from_dict(body["geometry"]).almost_equal(OBLIQUE)
    listed = client.get("/v1/volumes", headers=AUTH).json()["volumes"]
    assert [v["id"] for v in listed] == [body["id"]] and listed[0]["bytes"] >= np.prod(SHAPE) * 2


def test_segment_auto_delete_round_trip_geometry_and_slicer_file(make_client, make_segmenter, tmp_path):
    segmenter = make_segmenter()
    client = make_client(segmenter)
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE), OBLIQUE)).json()["id"]
    prompt = box_prompt(2, (12, 10, 36, 30))

    results = {}
    for output, suffix in (("nrrd", ".nrrd"), ("nifti", ".nii.gz")):
        response = client.post(f"/v1/volumes/{volume_id}/segment", params={"output": output}, json=prompt,
                               headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == f'attachment; filename="labels{suffix}"'
        assert json.loads(response.headers["X-MedSAM-Labels"]) == [
            {"value": v, "name": n, "color": list(label_color(v))} for v, n in LABELS.items() if v]
        labels = _labels_from(response, tmp_path, suffix)
        assert labels.array.shape == SHAPE and labels.array.dtype == np.uint8
        assert labels.geometry.almost_equal(OBLIQUE), labels.geometry.describe_difference(OBLIQUE)
        assert set(np.unique(labels.array)) <= {0, 1, 2}
        results[output] = labels.array
    np.testing.assert_array_equal(results["nrrd"], results["nifti"])
    assert results["nrrd"][2].any()  # the prompted slice got the prompted label

    # default output: a 3D Slicer segmentation, read back by slicerio with names, colours and geometry
    response = client.post(f"/v1/volumes/{volume_id}/segment", json=prompt, headers=AUTH)
    assert response.headers["content-disposition"] == 'attachment; filename="labels.seg.nrrd"'
    path = tmp_path / "labels.seg.nrrd"
    path.write_bytes(response.content)
    segmentation = slicerio.read_segmentation(str(path))
    assert [(s["name"], s["labelValue"]) for s in segmentation["segments"]] == [("liver", 1), ("tumour", 2)]
    for segment in segmentation["segments"]:
        np.testing.assert_allclose(np.asarray(segment["color"]) * 255, label_color(segment["labelValue"]), atol=0.5)
    np.testing.assert_allclose(segmentation["ijkToLPS"], OBLIQUE.affine_lps(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(segmentation["voxels"]).T, results["nrrd"])  # (i,j,k) -> (Z,Y,X)
    liver = segmentation["segments"][0]["extent"]
    zs, ys, xs = np.nonzero(results["nrrd"] == 1)
    assert [int(v) for v in liver] == [xs.min(), xs.max(), ys.min(), ys.max(), zs.min(), zs.max()]

    response = client.post(f"/v1/volumes/{volume_id}/auto", params={"output": "nrrd"}, headers=AUTH)
    assert response.status_code == 200, response.text
    automatic = _labels_from(response, tmp_path, ".nrrd")
    assert automatic.array.shape == SHAPE and automatic.geometry.almost_equal(OBLIQUE)
    # refine per request: the coarse head alone is what Segmenter(refine="none") gives for the same upload
    response = client.post(f"/v1/volumes/{volume_id}/auto", params={"output": "nrrd", "refine": "none"},
                           headers=AUTH)
    assert response.status_code == 200, response.text
    coarse = segmenter.segment_volume(random_volume(SHAPE), geometry=OBLIQUE, refine="none").labels
    np.testing.assert_array_equal(_labels_from(response, tmp_path, ".nrrd").array, coarse)
    _one_line_error(client.post(f"/v1/volumes/{volume_id}/auto", params={"refine": "best"}, headers=AUTH), 422)

    assert segmenter.cache_stats()["entries"] > 0
    assert client.delete(f"/v1/volumes/{volume_id}", headers=AUTH).status_code == 204
    assert segmenter.cache_stats()["entries"] == 0  # its embeddings went with it
    assert "unknown volume id" in _one_line_error(client.get(f"/v1/volumes/{volume_id}", headers=AUTH), 404)
    _one_line_error(client.post(f"/v1/volumes/{volume_id}/auto", headers=AUTH), 404)
    _one_line_error(client.delete(f"/v1/volumes/{volume_id}", headers=AUTH), 404)


def test_second_prompt_does_no_encoder_work(make_client, tmp_path):
    client = make_client()
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE, seed=3))).json()["id"]
    prompt = box_prompt(1, (10, 8, 30, 28))
    stats, labels = [], []
    for _ in range(2):
        response = client.post(f"/v1/volumes/{volume_id}/segment", params={"output": "nrrd"}, json=prompt,
                               headers=AUTH)
        stats.append(json.loads(response.headers["X-MedSAM-Stats"]))
        labels.append(_labels_from(response, tmp_path, ".nrrd").array)
    assert stats[0]["encoded_slices"] > 0 and stats[1]["encoded_slices"] == 0
    assert stats[0]["seconds"] > 0
    np.testing.assert_array_equal(labels[0], labels[1])

    client.post(f"/v1/volumes/{volume_id}/auto", headers=AUTH)  # the automatic pass embeds every slice
    detail = client.get(f"/v1/volumes/{volume_id}", headers=AUTH).json()
    assert detail["cache"]["entries"] == SHAPE[0] and detail["cache"]["bytes"] > 0
    assert detail["bytes"] == detail["cache"]["bytes"] + int(np.prod(SHAPE)) * 2
    points = {"points": [[20, 20], [2, 2]], "point_labels": [1, 0]}
    other = {"coordinates": "voxel", "labels": {"tumour": {"3": points}}}
    response = client.post(f"/v1/volumes/{volume_id}/segment", json=other, headers=AUTH)
    assert response.status_code == 200 and json.loads(response.headers["X-MedSAM-Stats"])["encoded_slices"] == 0


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_world_prompts_on_an_oblique_grid_equal_voxel_prompts(make_client, tmp_path, space):
    client = make_client()
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE, seed=5))).json()["id"]
    k, (x0, y0, x1, y1) = 2, (12, 10, 36, 30)
    flip = np.array([-1.0, -1.0, 1.0]) if space == "RAS" else np.ones(3)
    # box corners are voxel edges: half a voxel outside the first / last covered voxel centres
    corners = [list(OBLIQUE.index_to_world([x - 0.5, y - 0.5, k]) * flip) for x, y in ((x0, y0), (x1, y1))]
    point = list(OBLIQUE.index_to_world([20, 18, k]) * flip)
    world = {"coordinates": "world", "space": space,
             "labels": {"liver": {str(k): {"boxes": [corners], "points": [point]}}}}
    voxel = {"coordinates": "voxel", "labels": {"liver": {str(k): {"boxes": [[x0, y0, x1, y1]], "points": [[20, 18]]}}}}
    arrays = []
    for document in (voxel, world):
        response = client.post(f"/v1/volumes/{volume_id}/segment", params={"output": "nrrd"}, json=document,
                               headers=AUTH)
        assert response.status_code == 200, response.text
        arrays.append(_labels_from(response, tmp_path, ".nrrd").array)
    assert arrays[0][k].any()  # a non-empty answer, or equality would prove nothing
    np.testing.assert_array_equal(arrays[0], arrays[1])


# ---------------------------------------------------------------------------- refusals: prompts
_BAD_PROMPTS = {
    "no coordinates": ({"labels": {"liver": {"1": {"boxes": [[1, 1, 5, 5]]}}}}, '"coordinates" is required'),
    "world without space": ({"coordinates": "world", "labels": {}}, '"space" is required'),
    "slice outside": (box_prompt(9, (1, 1, 5, 5)), "slice 9 is outside the volume"),
    "box outside": (box_prompt(1, (1, 1, 49, 5)), "box"),
    "point outside": ({"coordinates": "voxel", "labels": {"liver": {"1": {"points": [[10, 40]]}}}}, "outside the"),
    "world point off its slice": ({"coordinates": "world", "space": "LPS", "labels": {"liver": {
        "1": {"points": [list(OBLIQUE.index_to_world([5, 5, 3]))]}}}}, "voxels from slice 1"),
    "unknown label": (box_prompt(1, (1, 1, 5, 5), label="livr"), "did you mean 'liver'"),
    "background": (box_prompt(1, (1, 1, 5, 5), label="background"), "is the background"),
    "huge integer": (box_prompt(1, (1, 1, 5, 10**400)), "(4 finite numbers), found"),
    "not an object": ([1, 2, 3], "body"),
    "unknown key": ({"coordinates": "voxel", "labels": {}, "extra": 1}, "unknown top-level key"),
}


@pytest.mark.parametrize("case", list(_BAD_PROMPTS))
def test_bad_prompts_are_422_with_one_line(make_client, tmp_path, case):
    client = make_client()
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE))).json()["id"]
    document, expected = _BAD_PROMPTS[case]
    detail = _one_line_error(client.post(f"/v1/volumes/{volume_id}/segment", json=document, headers=AUTH), 422)
    assert expected in detail


def test_bad_query_json_and_oversized_body(make_client, tmp_path):
    client = make_client()
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE))).json()["id"]
    url = f"/v1/volumes/{volume_id}/segment"
    assert "output" in _one_line_error(client.post(url, params={"output": "png"}, json=box_prompt(1, (1, 1, 5, 5)),
                                                   headers=AUTH), 422)
    json_headers = {**AUTH, "Content-Type": "application/json"}
    assert "not valid JSON" in _one_line_error(client.post(url, content=b"{oops", headers=json_headers), 422)
    big = b" " * (2 << 20)
    assert "request body over" in _one_line_error(client.post(url, content=big, headers=json_headers), 413)
    chunked = (big[i:i + 65536] for i in range(0, len(big), 65536))  # no Content-Length: counted while read
    assert "request body over" in _one_line_error(client.post(url, content=chunked, headers=json_headers), 413)


# ---------------------------------------------------------------------------- refusals: uploads
def _nrrd_header(extra: str, sizes: str = "4 4 2", encoding: str = "raw") -> bytes:
    return f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nencoding: {encoding}\n{extra}\n".encode()


def test_upload_refusals_are_4xx_with_one_line(make_client, tmp_path):
    client = make_client()
    cases = [
        (b"abc", "notes.txt", 415, "unsupported file type"),
        (b"abc", "scan.nhdr", 415, "detached data"),
        (b"abc", "scan.mhd", 415, "detached data"),
        (_nrrd_header("data file: /etc/passwd\n"), "scan.nrrd", 415, "detached data file"),
        (_nrrd_header("datafile: ../../x.raw\n"), "scan.nrrd", 415, "detached data file"),
        (b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = /etc/passwd\n",
         "scan.mha", 415, "detached data file"),
        (b"plain garbage " * 20, "scan.nii.gz", 400, "cannot read 'scan.nii.gz'"),
        (b"plain garbage " * 20, "scan.nrrd", 400, "not an NRRD file"),
        (_nrrd_header("\n") + b"\x00" * 10, "scan.nrrd", 400, "cannot read 'scan.nrrd'"),  # truncated voxels
        (b"", "scan.nrrd", 400, "empty body"),
        (volume_bytes(tmp_path, random_volume((3, 8, 8), channels=2)), "two.nrrd", 422, "2 channel(s)"),
        (volume_bytes(tmp_path, np.full((2, 4, 4), np.nan, np.float32)), "nan.nrrd", 422, "NaN"),
        (volume_bytes(tmp_path, np.full((2, 4, 4), -1e300)), "huge.nrrd", 422, "beyond the float32 range"),
        # a 40 GB voxel grid in a tiny gzip file: refused from the header, before any voxel is read
        (volume_bytes(tmp_path, np.zeros((2, 4, 4), np.int16)).replace(b"sizes: 4 4 2", b"sizes: 10000 10000 100"),
         "bomb.nrrd", 413, "memory bound"),
    ]
    for data, filename, status, expected in cases:
        detail = _one_line_error(upload(client, data, filename), status)
        assert expected in detail, (filename, detail)
    assert client.get("/v1/volumes", headers=AUTH).json() == {"volumes": []}
    assert "filename" in _one_line_error(client.post("/v1/volumes", content=b"x", headers=AUTH), 422)


def test_upload_size_limit_from_header_and_while_streaming(make_client, tmp_path):
    client = make_client(max_upload_bytes=4096)
    data = volume_bytes(tmp_path, random_volume((4, 32, 32), seed=1))
    assert len(data) > 4096
    assert "limit of 4096 bytes" in _one_line_error(upload(client, data), 413)

    def chunks():  # no Content-Length: the limit is enforced while reading
        for start in range(0, len(data), 1000):
            yield data[start:start + 1000]

    response = client.post("/v1/volumes", params={"filename": "c.nrrd"}, content=chunks(),
                           headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert "limit of 4096 bytes" in _one_line_error(response, 413)


def test_channels_follow_the_model(make_client, make_segmenter, tmp_path):
    client = make_client(make_segmenter(in_channels=2))
    info = client.get("/v1/info", headers=AUTH).json()
    assert info["channels"] == ["channel_0", "channel_1"] and info["accepted_channels"] == [1, 2]
    two = upload(client, volume_bytes(tmp_path, random_volume((3, 24, 24), channels=2)))
    assert two.status_code == 201 and two.json()["channels"] == 2
    grey = upload(client, volume_bytes(tmp_path, random_volume((3, 24, 24))))
    assert grey.status_code == 201 and grey.json()["channels"] == 1  # repeated into the model's channels
    three = upload(client, volume_bytes(tmp_path, random_volume((3, 24, 24), channels=3), suffix=".nii.gz"),
                   "three.nii.gz")
    assert "takes 1 or 2" in _one_line_error(three, 422)
    response = client.post(f"/v1/volumes/{two.json()['id']}/segment", params={"output": "nrrd"},
                           json=box_prompt(1, (4, 4, 20, 20)), headers=AUTH)
    assert response.status_code == 200
    assert _labels_from(response, tmp_path, ".nrrd").array.shape == (3, 24, 24)


# ---------------------------------------------------------------------------- memory bound
def test_least_recently_used_volumes_are_evicted(make_client, make_segmenter, tmp_path):
    segmenter = make_segmenter()
    one = random_volume((4, 32, 32))  # 8 KiB of int16 voxels
    client = make_client(segmenter, max_session_bytes=int(2.5 * one.nbytes) + 300_000)
    first = upload(client, volume_bytes(tmp_path, one)).json()["id"]
    client.post(f"/v1/volumes/{first}/segment", json=box_prompt(1, (8, 8, 24, 24)), headers=AUTH)
    assert segmenter.cache_stats()["entries"] > 0  # first's embeddings count against the bound
    embedded = client.get(f"/v1/volumes/{first}", headers=AUTH).json()["cache"]["bytes"]
    assert embedded > 0
    ids = [upload(client, volume_bytes(tmp_path, random_volume((4, 32, 32), seed=s))).json()["id"]
           for s in range(1, 40)]
    open_ids = [v["id"] for v in client.get("/v1/volumes", headers=AUTH).json()["volumes"]]
    assert first not in open_ids and open_ids == ids[-len(open_ids):]  # oldest out first
    assert sum(v["bytes"] for v in client.get("/v1/volumes", headers=AUTH).json()["volumes"]) <= \
        client.app.state.server.sessions.max_bytes
    assert "evicted" in _one_line_error(client.get(f"/v1/volumes/{first}", headers=AUTH), 404)
    assert segmenter.cache_stats()["entries"] == 0  # the evicted volume's embeddings were dropped

    # a read marks a volume as recently used: the next oldest goes first
    oldest, next_oldest = open_ids[0], open_ids[1]
    client.get(f"/v1/volumes/{oldest}", headers=AUTH)
    for seed in (98, 99):
        upload(client, volume_bytes(tmp_path, random_volume((4, 32, 32), seed=seed)))
    still_open = {v["id"] for v in client.get("/v1/volumes", headers=AUTH).json()["volumes"]}
    assert oldest in still_open and next_oldest not in still_open


def test_a_volume_larger_than_the_memory_bound_is_refused(make_client, tmp_path):
    client = make_client(max_session_bytes=10_000)
    detail = _one_line_error(upload(client, volume_bytes(tmp_path, random_volume((4, 40, 40)))), 413)
    assert "memory bound" in detail or "--max-memory-mb" in detail


# ---------------------------------------------------------------------------- unexpected errors
def test_an_unexpected_error_is_a_one_line_500_without_traceback(make_client, make_segmenter, tmp_path):
    segmenter = make_segmenter()

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA exploded at /home/secret/model.py line 3")

    segmenter.segment_volume = broken
    client = make_client(segmenter)
    volume_id = upload(client, volume_bytes(tmp_path, random_volume(SHAPE))).json()["id"]
    response = client.post(f"/v1/volumes/{volume_id}/auto", headers=AUTH)
    assert response.status_code == 500 and response.json() == {"detail": "internal error: RuntimeError"}
