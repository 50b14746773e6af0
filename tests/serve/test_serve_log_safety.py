"""The server's log: client text cannot forge log lines, and a client that hangs up is one line, not a 500."""

from __future__ import annotations

import socket
import tempfile
import time
import urllib.parse

import httpx
import pytest
from serve_helpers import AUTH, TOKEN, captured_logs, live_server, random_volume, upload, volume_bytes

from medsam_kit.serve import create_app

FORGING = "a\n2026-01-01 INFO forged\r\x1b[31mred\x85\u2028.nrrd"  # newline, CR, ANSI escape, NEL, line separator
LOGGERS = ("medsam_kit", "uvicorn.error", "uvicorn.access")


def _printable(message: str) -> bool:
    return message.isprintable()  # False for \n, \r, \x1b, \x85, \u2028 and every other control character


@pytest.fixture
def upload_dir(tmp_path, monkeypatch):
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))  # the server runs in this process: its spool lands here
    return folder


def test_an_uploaded_filename_cannot_forge_log_lines(make_client, tmp_path):
    client = make_client()
    with captured_logs("medsam_kit") as records:
        response = upload(client, volume_bytes(tmp_path, random_volume((2, 16, 16))), filename=FORGING)
        assert response.status_code == 201, response.text
        refused = upload(client, b"NRRD0004\nbroken", filename=FORGING)
    assert refused.status_code == 400 and "\n" not in refused.text  # the answer is one line too
    assert "2026-01-01 INFO forged" in refused.json()["detail"] and _printable(refused.json()["detail"])
    messages = [record.getMessage() for record in records]
    assert any("2026-01-01 INFO forged" in message for message in messages), messages
    assert all(_printable(message) for message in messages), messages


def test_a_request_path_cannot_forge_log_lines(make_client, make_segmenter):
    segmenter = make_segmenter()
    client = make_client(segmenter)
    server = client.app.state.server

    def broken(volume_id):
        raise RuntimeError("boom")

    server.sessions.get = broken
    with captured_logs("medsam_kit") as records:
        response = client.get("/v1/volumes/x%0a2026-01-01%20INFO%20forged%1b", headers=AUTH)
    assert response.status_code == 500 and response.json() == {"detail": "internal error: RuntimeError"}
    messages = [record.getMessage() for record in records]
    assert any("forged" in message for message in messages), messages
    assert all(_printable(message) for message in messages), messages


def _raw_upload_then_hang_up(base: str, filename: str, declared: int, sent: int) -> None:
    """Send an upload's head and ``sent`` of ``declared`` body bytes over a real socket, then close it."""
    url = urllib.parse.urlsplit(base)
    query = urllib.parse.urlencode({"filename": filename})
    head = (f"POST /v1/volumes?{query} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
        connection.sendall(head + bytes(sent))
        time.sleep(0.3)  # let the server start spooling the body


def _wait_for(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_client_dropping_mid_upload_is_one_log_line_and_leaves_no_file(make_segmenter, upload_dir):
    app = create_app(make_segmenter(), token=TOKEN)
    with captured_logs(*LOGGERS) as records, live_server(app, log_config=None, log_level="info") as base:
        _raw_upload_then_hang_up(base, FORGING, declared=10_000_000, sent=200_000)

        def logged() -> list[str]:
            return [r.getMessage() for r in records if "disconnected during upload" in r.getMessage()]

        assert _wait_for(lambda: logged() and not list(upload_dir.iterdir())), [r.getMessage() for r in records]
        assert httpx.get(f"{base}/v1/health").status_code == 200  # the server carries on
        time.sleep(0.2)  # anything uvicorn would log after the endpoint returned
    (line,) = logged()
    assert "2026-01-01 INFO forged" in line and _printable(line)
    sent = int(line.split(" after ")[1].split()[0])
    assert 0 <= sent <= 200_000
    assert not [r for r in records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")], \
        [r.getMessage() for r in records]
    assert not [r for r in records if r.name == "uvicorn.access" and " 500" in r.getMessage()]
    assert all(_printable(r.getMessage()) for r in records)
    assert list(upload_dir.iterdir()) == []


def test_a_client_dropping_a_json_body_is_not_a_500(make_segmenter):
    app = create_app(make_segmenter(), token=TOKEN)
    with captured_logs(*LOGGERS) as records, live_server(app, log_config=None, log_level="info") as base:
        url = urllib.parse.urlsplit(base)
        head = (f"POST /v1/volumes/nope/segment HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n").encode()
        with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
            connection.sendall(head + b'{"coordinates": "voxel", ')
            time.sleep(0.3)
        time.sleep(0.5)
        assert httpx.get(f"{base}/v1/health").status_code == 200
    assert not [r for r in records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")], \
        [r.getMessage() for r in records]
