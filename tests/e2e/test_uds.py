"""`--uds PATH`: serving HTTP/1.1 on a Unix domain socket, as uvicorn's `--uds` does.

The real CLI serves a FastAPI app; clients are httpx (`HTTPTransport(uds=...)`) and curl
`--unix-socket`. The app sees `client` None and `server` `(path, None)`, as under uvicorn.
The socket file gets `--uds-perms`, a stale file from a crash is replaced, a live one is
refused, and the file is gone after SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness import APPS_DIR, URINGAPI_BIN, free_port
from test_cli_ecosystem import EXIT_TIMEOUT, READY_TIMEOUT, assert_usage_error, start, stop

pytestmark = pytest.mark.uringapi_only

APP = ("uds_app:app", "--app-dir", str(APPS_DIR))


def serve(sock: Path, *extra: str) -> list[str]:
    return [str(URINGAPI_BIN), "serve", *APP, "--uds", str(sock), "--workers", "1", *extra]


def client(sock: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://uds.test",
                        timeout=EXIT_TIMEOUT)


def wait_served(proc: subprocess.Popen, sock: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"server exited with {proc.returncode} before answering:\n{out}")
        try:
            with client(sock) as c:
                if c.get("/who").status_code == 200:
                    return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("server did not answer on its Unix socket in time")
        time.sleep(0.05)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "app.sock"


@pytest.mark.parametrize("threads", [1, 2])
def test_http_over_a_unix_socket_and_the_file_is_gone_after_sigterm(sock_path: Path, threads: int) -> None:
    proc = start(serve(sock_path, "--threads", str(threads), "--uds-perms", "660"))
    try:
        wait_served(proc, sock_path)
        assert stat.S_ISSOCK(sock_path.stat().st_mode)
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
        with client(sock_path) as c:
            for _ in range(4):  # keep-alive: one connection, several requests
                r = c.get("/who")
                assert r.status_code == 200
                assert r.json() == {"client": None, "server": [str(sock_path), None], "scheme": "http"}
            body = b"x" * 300_000 + b"end-of-the-body!"
            r = c.post("/echo", content=body)
            assert r.json() == {"length": len(body), "tail": "end-of-the-body!"}
            # A chunked upload too.
            r = c.post("/echo", content=iter([b"a" * 70_000, b"b" * 70_000]))
            assert r.json() == {"length": 140_000, "tail": "b" * 16}
    finally:
        assert stop(proc) == 0
    assert not sock_path.exists(), "the socket file outlived the server"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_unix_socket(sock_path: Path) -> None:
    proc = start(serve(sock_path))
    try:
        wait_served(proc, sock_path)
        out = subprocess.run(["curl", "-sS", "--unix-socket", str(sock_path), "-i", "http://localhost/who"],
                             capture_output=True, timeout=EXIT_TIMEOUT, check=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(body) == {"client": None, "server": [str(sock_path), None], "scheme": "http"}
        # A bad request on the socket gets its 400 and a close, as on TCP.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(EXIT_TIMEOUT)
            s.connect(str(sock_path))
            s.sendall(b"GE T / HTTP/1.1\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    finally:
        assert stop(proc) == 0


def test_a_stale_socket_file_is_replaced(sock_path: Path) -> None:
    # What a crash leaves: a socket file nobody accepts on.
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(sock_path))
    leftover.close()
    assert sock_path.exists()
    proc = start(serve(sock_path))
    try:
        wait_served(proc, sock_path)
    finally:
        assert stop(proc) == 0
    assert not sock_path.exists()


def test_a_live_socket_is_not_taken_over(sock_path: Path) -> None:
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(sock_path))
    live.listen(8)
    try:
        assert_usage_error(serve(sock_path), None, "another process is accepting")
        assert sock_path.exists(), "the live socket's file was removed"
    finally:
        live.close()


def test_bad_uds_values_are_usage_errors(sock_path: Path, tmp_path: Path) -> None:
    assert_usage_error(serve(tmp_path / "no" / "such" / "dir.sock"), None, "dir.sock", "folder must exist")
    (tmp_path / "plain").write_text("keep me")
    assert_usage_error(serve(tmp_path / "plain"), None, "not a socket")
    assert (tmp_path / "plain").read_text() == "keep me"
    assert_usage_error(serve(sock_path, "--uds-perms", "999"), None, "octal")
    for clash in (["--port", str(free_port())], ["--host", "127.0.0.1"], ["--fd", "3"]):
        assert_usage_error(serve(sock_path, *clash), None, "--uds", clash[0])
    # The variables clash the same way.
    assert_usage_error(serve(sock_path), {"URINGAPI_PORT": "8001"}, "--uds", "--port")
    assert_usage_error([str(URINGAPI_BIN), "serve", *APP, "--uds-perms", "600"], None, "--uds")
    assert not sock_path.exists()


def test_uds_from_the_environment(sock_path: Path) -> None:
    proc = start([str(URINGAPI_BIN), "serve", *APP, "--workers", "1"],
                 {"URINGAPI_UDS": str(sock_path), "URINGAPI_UDS_PERMS": "0o600"})
    try:
        wait_served(proc, sock_path)
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    finally:
        assert stop(proc) == 0
    assert not sock_path.exists()


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None,
                    reason="curl and openssl are needed")
def test_tls_over_a_unix_socket(sock_path: Path, tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"],
                   cwd=tmp_path, check=True, capture_output=True)
    proc = start(serve(sock_path, "--ssl-certfile", str(tmp_path / "c.pem"),
                       "--ssl-keyfile", str(tmp_path / "k.pem")))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            out = subprocess.run(["curl", "-sS", "--cacert", str(tmp_path / "c.pem"),
                                  "--unix-socket", str(sock_path), "https://localhost/who"],
                                 capture_output=True, timeout=EXIT_TIMEOUT)
            if out.returncode == 0 or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"client": None, "server": [str(sock_path), None], "scheme": "https"}
    finally:
        assert stop(proc) == 0
    assert not sock_path.exists()


def test_uringapi_run_spells_uds_options_as_the_cli_does(sock_path: Path) -> None:
    from uringapi import serve_args

    # A Python int mode (0o660 == 432) must reach the CLI as that mode, not as octal "432".
    assert serve_args("m:app", uds=sock_path, uds_perms=0o660) == [
        "serve", "m:app", "--uds", str(sock_path), "--uds-perms", "0o660"]


def test_uringapi_run_serves_a_unix_socket(sock_path: Path) -> None:
    code = ("import uringapi; uringapi.run('uds_app:app', app_dir=%r, uds=%r, uds_perms=0o600, workers=1)"
            % (str(APPS_DIR), str(sock_path)))
    proc = start([sys.executable, "-c", code])
    try:
        wait_served(proc, sock_path)
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    finally:
        assert stop(proc) == 0
    assert not sock_path.exists()
