"""Shared by the conformance checks: starting `uringapi serve` from the Python environment
the check runs in (a venv of its own, with the wheel installed; see README.md).

The checks reuse tests/e2e/harness.py for the process handling (readiness wait, stop,
cleanup of the whole process group) but build their own command line: the binary is the
one installed in *this* interpreter's environment, never the main .venv's.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPS_DIR = REPO / "tests" / "apps"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import HOST, Server, free_port, server_env  # noqa: E402

#: The uringapi console script of the environment running this check.
URINGAPI = Path(sys.prefix) / "bin" / "uringapi"

#: The server that the checks able to run against another one (check_autobahn.py and
#: daphne's websocket tests) start: uringapi, or `uvicorn` (websockets backend, from
#: requirements-websocket.txt) to show that such a check itself is right.
CHECKED_SERVER = os.environ.get("CONFORMANCE_SERVER", "uringapi").strip().lower()
if CHECKED_SERVER not in ("uringapi", "uvicorn"):
    raise SystemExit(f"error: CONFORMANCE_SERVER={CHECKED_SERVER!r}\n"
                     "hint: use uringapi (the default) or uvicorn")


def start(log_dir: Path, app: str, *, app_dir: Path = APPS_DIR, workers: int = 1,
          env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
          probe_path: str | None = "/", kind: str = "uringapi") -> Server:
    """`uringapi serve app` (or, with kind="uvicorn", uvicorn with the same flags, which
    share uvicorn's spellings) on a free port; returns once it answers (see harness)."""
    port = free_port()
    if kind == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
               "--workers", str(workers), "--app-dir", str(app_dir), "--loop", "uvloop",
               "--http", "httptools", "--ws", "websockets", *extra]
        server = Server(cmd, port, workers, 1, log_dir, server_env(env))
        server.wait_ready(probe_path)
        return server
    assert URINGAPI.exists(), f"{URINGAPI} missing: install the uringapi wheel into {sys.prefix}"
    cmd = [str(URINGAPI), "serve", app, "--host", HOST, "--port", str(port),
           "--workers", str(workers), "--threads", "1", "--app-dir", str(app_dir), *extra]
    server = Server(cmd, port, workers, 1, log_dir, server_env(env))
    server.wait_ready(probe_path)
    return server


def request(port: int, raw: bytes, timeout: float = 30.0) -> bytes:
    """Sends raw request bytes (which should say Connection: close) and returns every
    byte until the server closes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while True:
            data = s.recv(65536)
            if not data:
                return out
            out += data


def get(port: int, target: str, method: str = "GET", body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: conformance", "Connection: close",
            *(f"{k}: {v}" for k, v in headers)]
    if body:
        head.append(f"Content-Length: {len(body)}")
    return request(port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def json_body(response: bytes) -> object:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])
