"""Host and Origin checks: DNS rebinding and cross-site (CSRF) requests are refused before any work is done."""

from __future__ import annotations

import tempfile

import pytest
from serve_helpers import AUTH, random_volume, upload, volume_bytes

from medsam_kit.cli.main import main
from medsam_kit.cli.serve import allowed_hosts_for
from medsam_kit.serve.guard import normalize_origin

PORT = 8000


def _refused(response) -> str:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/json"
    assert "\n" not in response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


@pytest.fixture
def upload_dir(tmp_path, monkeypatch):
    """Uploads are spooled here (``tempfile.tempdir``), so a test can check that nothing was written."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", "127.0.0.1", "localhost", f"LOCALHOST:{PORT}", "[::1]",
                                  f"[::1]:{PORT}", "localhost."])
def test_loopback_host_names_are_answered(make_client, host):
    client = make_client(token=None)
    assert client.get("/v1/health", headers={"Host": host}).status_code == 200
    assert client.get("/v1/volumes", headers={"Host": host}).json() == {"volumes": []}


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", "127.0.0.1.evil.example",
                                  "localhost.evil.example:8000", "testserver", "[::2]"])
def test_other_host_names_are_refused(make_client, host):
    client = make_client(token=None)
    for method, path in (("GET", "/v1/health"), ("GET", "/v1/info"), ("GET", "/docs"), ("DELETE", "/v1/volumes/x")):
        detail = _refused(client.request(method, path, headers={"Host": host}))
        assert "--allowed-host" in detail and repr(host) in detail


def test_a_rebound_name_cannot_upload_even_with_the_token(make_client, tmp_path, upload_dir):
    client = make_client()
    data = volume_bytes(tmp_path, random_volume((2, 16, 16)))
    _refused(upload(client, data, headers={**AUTH, "Host": "evil.example"}))
    assert client.get("/v1/volumes", headers=AUTH).json() == {"volumes": []}
    assert list(upload_dir.iterdir()) == []


def test_allowed_hosts_extend_the_loopback_names(make_client):
    client = make_client(token=None, allowed_hosts=["gpu-box.lab", "10.1.2.3"])
    for host in ("gpu-box.lab:8000", "GPU-BOX.lab", "10.1.2.3:8000", "127.0.0.1:8000"):
        assert client.get("/v1/volumes", headers={"Host": host}).status_code == 200, host
    _refused(client.get("/v1/volumes", headers={"Host": "gpu-box.lab.evil.example"}))
    anywhere = make_client(token=None, allowed_hosts=["*"])
    assert anywhere.get("/v1/volumes", headers={"Host": "whatever.example"}).status_code == 200


# ---------------------------------------------------------------------------- Origin / Sec-Fetch-Site
@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost:3000", "null", "http://127.0.0.1:9999"])
def test_a_cross_origin_upload_is_refused_and_nothing_is_stored(make_client, tmp_path, upload_dir, origin):
    client = make_client(token=None)  # the loopback default: no token, so the Origin check is what stops CSRF
    data = volume_bytes(tmp_path, random_volume((2, 16, 16)))
    detail = _refused(upload(client, data, headers={"Host": f"127.0.0.1:{PORT}", "Origin": origin}))
    assert "--allowed-origin" in detail and repr(origin) in detail
    assert client.get("/v1/volumes").json() == {"volumes": []}
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_fetch_metadata_without_origin_is_refused(make_client, site):
    client = make_client(token=None)  # e.g. <img src="http://127.0.0.1:8000/v1/volumes"> on another site
    assert "Sec-Fetch-Site" in _refused(client.get("/v1/volumes", headers={"Sec-Fetch-Site": site}))
    for own in ("same-origin", "none"):  # the browsable /docs page, a URL typed in the address bar
        assert client.get("/v1/volumes", headers={"Sec-Fetch-Site": own}).status_code == 200


def test_an_allowed_origin_may_upload_and_gets_cors_headers(make_client, tmp_path, upload_dir):
    client = make_client(token=None, allowed_origins=["https://Viewer.example:443/"])
    data = volume_bytes(tmp_path, random_volume((2, 16, 16)))
    headers = {"Origin": "https://viewer.example", "Sec-Fetch-Site": "cross-site"}
    response = upload(client, data, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["access-control-allow-origin"] == "https://viewer.example"
    preflight = client.options("/v1/volumes", headers={**headers, "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
    _refused(upload(client, data, headers={"Origin": "https://viewer.example.evil.example"}))
    assert len(client.get("/v1/volumes").json()["volumes"]) == 1
    assert list(upload_dir.iterdir()) == []  # the upload's spool folder is gone once it is read


def test_same_origin_requests_of_the_docs_page_are_answered(make_client):
    client = make_client(token=None)  # Swagger UI at http://127.0.0.1:8000/docs sends Origin on POST / DELETE
    response = client.delete("/v1/volumes/nope", headers={"Host": f"127.0.0.1:{PORT}",
                                                          "Origin": f"http://127.0.0.1:{PORT}"})
    assert response.status_code == 404
    _refused(client.delete("/v1/volumes/nope", headers={"Host": f"127.0.0.1:{PORT}",
                                                        "Origin": f"http://127.0.0.1:{PORT + 1}"}))


def test_the_slicer_client_headers_pass(make_client):
    client = make_client()  # what MedSAMKitLib.client sends: no Origin, no Sec-Fetch-*
    headers = {**AUTH, "Host": f"127.0.0.1:{PORT}", "Accept": "application/json", "User-Agent": "MedSAMKit-Slicer/1"}
    assert client.get("/v1/info", headers=headers).status_code == 200


@pytest.mark.parametrize("origin", ["*", "viewer.example", "https://viewer.example/app", "ftp://viewer.example",
                                    "https://"])
def test_malformed_allowed_origins_are_refused(origin):
    with pytest.raises(ValueError, match="--allowed-origin"):
        normalize_origin(origin)


# ---------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(("host", "extra", "expected"), [
    ("127.0.0.1", [], ["127.0.0.1"]),
    ("192.168.1.20", [], ["192.168.1.20"]),
    ("::1", ["gpu-box"], ["::1", "gpu-box"]),
    ("0.0.0.0", [], ["*"]),  # every interface: any name reaches it, the required token guards every request
    ("::", ["gpu-box.lab"], ["gpu-box.lab"]),  # ... unless the operator names the ones to answer
])
def test_cli_host_names(host, extra, expected):
    assert allowed_hosts_for(host, extra) == expected


def test_cli_help_documents_the_checks(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--allowed-host" in out and "--allowed-origin" in out and "Origin" in out


def test_cli_refuses_a_malformed_origin_before_loading_anything(capsys, monkeypatch):
    monkeypatch.delenv("MEDSAM_KIT_TOKEN", raising=False)
    assert main(["serve", "--model", "no_such_model", "--allowed-origin", "evil.example"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allowed-origin" in err
