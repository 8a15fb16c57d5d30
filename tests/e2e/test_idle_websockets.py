"""The memory of idle WebSockets: 10,000 of them, per process, against the issue's goal of
50 MiB over the idle server.

10,000 WebSockets each complete the handshake, echo one 16-byte text message and stay open,
idle, on a server with 2 workers and 1 front-end thread, as the bench's WebSocket cell
(benches/e2e/benchkit/websocket.py) with its app, benches/e2e/apps/ws_echo_asgi.py. The
growth of VmRSS of the front end and of each worker over the baseline taken after one
WebSocket came and went (the bench's baseline) is printed per process. The client is raw
sockets (handshake bytes, masked frames), so that 10,000 connections open in seconds.

The goal, 50 MiB (5.12 KiB per WebSocket), is met since the after-burst trim: 47.8-48.6
MiB, 4.90-4.98 KiB each (front end 1.75-1.82, each worker 1.58 for its 5,000) in six runs on
2026-12-05 on the shared 2-core machine with the default 128 channel slots. The slot pages
the handshakes touched (4 MiB of shared memory, counted in every process) and the pages
jemalloc freed are given back within 0.25-0.5 s of the last handshake, before SETTLE_S. It
was 50.8-54.0 MiB just before that, 55.1-58.6 MiB before the WebSocket task fit a smaller
size class and the worker's objects shrank, 63.6 MiB under glibc's malloc and 100.8-105 MiB
(10.3-10.8 KiB) before that. The assertion guards against regressions (6 KiB per WebSocket
in all, 3 KiB in the front end), and the print is the figure; README, "WebSockets", says
where each KiB goes. URINGAPI_TEST_IDLE_FASTAPI=1 adds
the README's FastAPI echo route (tests/apps/ws_idle_fastapi_app.py; about 17-18 KiB each, 15
of them FastAPI's own per-connection objects in the worker: its middleware coroutines,
three AsyncExitStacks with a deque each, the WebSocket object), which takes 20 s more.

The test raises its own RLIMIT_NOFILE to the hard limit (the server inherits it). Not timed.
"""

from __future__ import annotations

import base64
import os
import resource
import selectors
import socket
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, Server, ServerFactory

pytestmark = pytest.mark.uringapi_only  # the process model is uringapi's

CONNECTIONS = 10_000
#: Regression bounds per WebSocket (see the docstring: the issue's goal is 5.12 KiB).
TOTAL_LIMIT = {"asgi": 6 << 10, "fastapi": 20 << 10}
FRONT_END_LIMIT = 3 << 10
BATCH = 250
GUARD = 60.0
SETTLE_S = 1.0
MESSAGE = b"sixteen bytes..!"
APPS = {
    "asgi": ("ws_echo_asgi:app", REPO_ROOT / "benches" / "e2e" / "apps", "/"),
    "fastapi": ("ws_idle_fastapi_app:app", None, "/ws"),
}


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def processes(server: Server) -> dict[int, str]:
    """The front end and its workers (its children)."""
    pid = server.proc.pid
    children = sorted({int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                       for c in (task / "children").read_text().split()})
    return {pid: "front end", **{c: f"worker {i}" for i, c in enumerate(children)}}


def handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: idle-test\r\n\r\n").encode()


def text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


ECHO = bytes([0x81, len(MESSAGE)]) + MESSAGE


def open_idle(server: Server, path: str, n: int) -> list[socket.socket]:
    """n WebSockets that completed the handshake and echoed one message, now idle."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for start in range(0, n, BATCH):
            pending: dict[socket.socket, bytes] = {}
            for _ in range(min(BATCH, n - start)):
                s = socket.create_connection((server.host, server.port), timeout=GUARD)
                s.sendall(handshake(path))
                s.setblocking(False)
                socks.append(s)
                pending[s] = b""
                sel.register(s, selectors.EVENT_READ)
            while pending:
                ready = sel.select(GUARD)
                assert ready, f"{len(pending)} WebSockets never answered"
                for key, _ in ready:
                    s = key.fileobj
                    data = s.recv(4096)
                    assert data, "connection closed instead of upgraded"
                    got = pending[s] + data
                    head, sep, rest = got.partition(b"\r\n\r\n")
                    if sep and rest == b"":
                        assert head.startswith(b"HTTP/1.1 101 "), head[:200]
                        s.setblocking(True)
                        s.sendall(text_frame(MESSAGE))
                        s.setblocking(False)
                    elif sep:
                        assert rest.startswith(ECHO[:len(rest)]), rest[:40]
                        if len(rest) >= len(ECHO):
                            assert rest == ECHO, rest[:40]
                            sel.unregister(s)
                            del pending[s]
                            continue
                    pending[s] = got
    finally:
        sel.close()
    return socks


@pytest.fixture(scope="module", autouse=True)
def enough_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < CONNECTIONS + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {CONNECTIONS} connections")


FASTAPI = pytest.mark.skipif(os.environ.get("URINGAPI_TEST_IDLE_FASTAPI") != "1",
                             reason="URINGAPI_TEST_IDLE_FASTAPI=1 runs it (20 s more)")


@pytest.mark.parametrize("app", ["asgi", pytest.param("fastapi", marks=FASTAPI)])
def test_10000_idle_websockets_memory(servers: ServerFactory, app: str) -> None:
    target, app_dir, path = APPS[app]
    kwargs = {"app_dir": app_dir} if app_dir else {}
    server = servers.start(target, workers=2, threads=1, log_level="warning",
                           extra_args=("--limit-connections", str(CONNECTIONS + 100)), **kwargs)
    for s in open_idle(server, path, 1):  # each worker's WebSocket code loaded, as the bench
        s.close()
    time.sleep(SETTLE_S)
    procs = processes(server)
    assert len(procs) == 3, procs
    before = {pid: rss(pid) for pid in procs}
    socks = open_idle(server, path, CONNECTIONS)
    try:
        time.sleep(SETTLE_S)
        after = {pid: rss(pid) for pid in procs}
        total = sum(after.values()) - sum(before.values())
        for pid, name in procs.items():
            grew = after[pid] - before[pid]
            print(f"{app}: {name}: {before[pid] / 2**20:.1f} -> {after[pid] / 2**20:.1f} MiB, "
                  f"+{grew / 2**20:.1f} MiB ({grew / CONNECTIONS / 1024:.2f} KiB per WebSocket)")
        print(f"{app}: {CONNECTIONS} idle WebSockets: +{total / 2**20:.1f} MiB over the idle "
              f"server, {total / CONNECTIONS / 1024:.2f} KiB each (goal: 50 MiB)")
        front = after[server.proc.pid] - before[server.proc.pid]
        assert front <= FRONT_END_LIMIT * CONNECTIONS, f"front end: {front / 2**20:.1f} MiB"
        assert total <= TOTAL_LIMIT[app] * CONNECTIONS, f"{total / 2**20:.1f} MiB in all"
        # Still served: one of them echoes again.
        s = socks[len(socks) // 2]
        s.setblocking(True)
        s.sendall(text_frame(MESSAGE))
        got = b""
        while len(got) < len(ECHO):
            chunk = s.recv(64)
            assert chunk
            got += chunk
        assert got == ECHO
    finally:
        for s in socks:
            s.close()
