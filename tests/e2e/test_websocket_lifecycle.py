"""WebSockets across the server's life: a worker killed with SIGKILL closes the sockets
pinned to it with 1011 (RFC 6455 §7.4.1: the server met an unexpected condition) while the
other worker's sockets carry on and new connections are served; SIGTERM closes open
WebSockets with 1001 (going away) once --timeout-graceful-shutdown has passed, and says so
in one log line.

URINGAPI_TEST_SERVER=uvicorn runs them against uvicorn too, which shows the tests observe
what they claim; uvicorn's own answers differ and are the `UVICORN` values below: a killed
uvicorn worker takes its sockets with it (no close frame: 1006), and uvicorn closes with
1012 (service restart) on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness import SERVER_KIND, ServerFactory
from wsserver import GUARD, WsServer, start

KILLED_WORKER_CODE = {"uringapi": 1011, "uvicorn": None}  # None: no close frame came
SIGTERM_CODE = {"uringapi": 1001, "uvicorn": 1012}


def open_on(server: WsServer, stack: ExitStack) -> tuple[ClientConnection, int]:
    """A WebSocket to /ws/pid (closed with `stack`) and the pid of the worker holding it."""
    ws = stack.enter_context(connect(server.url("/ws/pid"), open_timeout=GUARD))
    return ws, int(ws.recv(GUARD))


def echo_ok(ws: ClientConnection, text: str) -> None:
    ws.send(text)
    assert ws.recv(GUARD) == text


def closed_code(ws: ClientConnection) -> int | None:
    """Waits (bounded) for the server to end the socket; the close code it sent, or None
    when the connection ended without a close frame."""
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(GUARD)
    return e.value.rcvd.code if e.value.rcvd else None


def test_worker_kill_9_closes_its_sockets_with_1011(servers: ServerFactory,
                                                    tmp_path: Path) -> None:
    server = start(servers, tmp_path, "fastapi", workers=2, threads=2)
    sockets: dict[int, list[ClientConnection]] = {}
    with ExitStack() as stack:
        # New WebSockets go to the least loaded worker: a few connections reach both. (The
        # bounded retry also covers uvicorn, whose kernel-balanced accept may hand a burst
        # to one worker, or start serving before its second worker is up.)
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            ws, pid = open_on(server, stack)
            sockets.setdefault(pid, []).append(ws)
            if len(sockets) == 2 and all(len(v) >= 2 for v in sockets.values()):
                break
            if sum(map(len, sockets.values())) >= 4:
                time.sleep(0.05)
        assert len(sockets) == 2, f"every WebSocket landed on one worker: {list(sockets)}"
        victim, survivor = sorted(sockets, key=lambda p: -len(sockets[p]))
        os.kill(victim, signal.SIGKILL)
        for ws in sockets[victim]:
            assert closed_code(ws) == KILLED_WORKER_CODE[SERVER_KIND]
        # The other worker's sockets never noticed.
        for i, ws in enumerate(sockets[survivor]):
            echo_ok(ws, f"survivor {i}")
        # New connections are served (by the survivor, or by the respawned worker).
        deadline = time.monotonic() + GUARD
        while True:
            try:
                ws, pid = open_on(server, stack)
                break
            except (OSError, ConnectionClosed):
                assert time.monotonic() < deadline, "no new WebSocket after the kill"
                time.sleep(0.1)
        assert pid != victim
        echo_ok(ws, "after the kill")
        assert server.server.proc.poll() is None, "the server exited"
    if SERVER_KIND == "uringapi":
        # The worker's exit is one line, with the number of its WebSockets (not a line
        # each: a worker holding 10,000 would write 10,000).
        lines = [line for line in server.server.stderr().splitlines() if "WebSocket" in line]
        n = len(sockets[victim])
        assert len(lines) == 1 and f"its {n} open WebSocket(s) close with 1011" in lines[0], lines


def test_sigterm_closes_open_websockets_with_1001(servers: ServerFactory,
                                                  tmp_path: Path) -> None:
    server = start(servers, tmp_path, "fastapi", "--timeout-graceful-shutdown", "1",
                   workers=1, threads=1)
    with ExitStack() as stack:
        sockets = [stack.enter_context(connect(server.url(f"/ws/echo?tag=term{i}"), open_timeout=GUARD))
                   for i in range(3)]
        for i, ws in enumerate(sockets):
            echo_ok(ws, f"before SIGTERM {i}")
        server.server.proc.send_signal(signal.SIGTERM)
        for ws in sockets:
            assert closed_code(ws) == SIGTERM_CODE[SERVER_KIND]
    assert server.server.wait_exit(GUARD) is not None, "the server did not exit after SIGTERM"
    if SERVER_KIND == "uringapi":
        # One line says what happens to them all, with their number (not a line each: a
        # server holding 10,000 would write 10,000).
        lines = [line for line in server.server.stderr().splitlines() if "WebSocket" in line]
        assert len(lines) == 1 and "websockets=3" in lines[0] and "close 1001" in lines[0], lines
