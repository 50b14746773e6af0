"""``medsam-kit serve``: bind refusal, limits, and a real server process started from the command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from medsam_kit.cli.main import main
from medsam_kit.serve import check_bind, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "gpu-box.example.org", ""])
def test_other_hosts_are_refused_without_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="--token"):
        check_bind(host, None)
    check_bind(host, "secret")


def test_cli_refuses_a_public_bind_before_loading_anything(capsys, monkeypatch):
    monkeypatch.delenv("MEDSAM_KIT_TOKEN", raising=False)
    # the model name is not even registered: the bind is checked first
    assert main(["serve", "--model", "no_such_model", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token" in err and "0.0.0.0" in err


@pytest.mark.parametrize(("flag", "value"), [("--max-upload-mb", "0"), ("--max-memory-mb", "-1"), ("--port", "70000")])
def test_cli_checks_its_limits(capsys, flag, value):
    assert main(["serve", "--model", "sam2.1_hiera_tiny_test", flag, value]) == 2
    assert flag in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serves_until_interrupted(tmp_path):
    port = _free_port()
    env = {**os.environ, "MEDSAM_KIT_TOKEN": "from-env", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "medsam_kit", "serve", "--model", "sam2.1_hiera_tiny_test",
                                "--in-channels", "1", "--port", str(port), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        assert httpx.get(f"{base}/v1/info", timeout=5).status_code == 401  # the token came from the environment
        info = httpx.get(f"{base}/v1/info", headers={"Authorization": "Bearer from-env"}, timeout=5).json()
        assert info["model"]["name"] == "sam2.1_hiera_tiny_test" and info["model"]["in_channels"] == 1
        assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"] == "medsam-kit server"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in out and "token required" in out
