"""Idle keep-alive connections hold no read buffer.

10,000 connections each send one request through the app, read the answer and stay open
(keep-alive), idle. The growth of the front end's VmRSS per connection over the baseline
taken before they opened is printed in the test log. Before, each idle connection kept a
pending read on a 16 KiB buffer: 10.3 KiB of RSS each in this test. Now a connection
between requests waits for readability with no buffer and takes one from its thread's
pool only while bytes are in flight: 3.8 to 4.8 KiB each. Then the connection's task
shrank: its future was 3,200 bytes, aligned to 128 (monoio's `Sleep` is 640 bytes with a
cache-padded timer entry, and the TLS handshake and TLS calls sized it even for plain
connections); with deadlines on one timer per thread (server/src/deadline.rs)
and the TLS states boxed it is 1,312 bytes, aligned to 8 (a unit test,
`size_probe::the_connection_task_stays_small`, guards it). Now 1.87 to 1.88 KiB each in
runs on a shared 2-core box: the task (about 1.4 KiB with monoio's task header), the
scratch buffer kept for the next request head, the deadline and drain entries, and the
runtime's per-socket state. The issue's target, 4 KiB, is the assertion.

The test raises its own RLIMIT_NOFILE to the hard limit (the server inherits it). Not timed.
"""

from __future__ import annotations

import resource
import selectors
import socket
from pathlib import Path

import pytest

from harness import Server, ServerFactory

pytestmark = pytest.mark.uringapi_only  # the process model is uringapi's

APP = "slow_reader_app:app"
CONNECTIONS = 10_000
PER_CONNECTION_LIMIT = 4 << 10
BATCH = 50
GUARD = 60.0
REQUEST = b"GET /idle HTTP/1.1\r\nHost: idle.test\r\n\r\n"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_idle(server: Server, n: int) -> list[socket.socket]:
    """n connections that each got one whole response and now sit idle (keep-alive)."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for start in range(0, n, BATCH):
            pending: dict[socket.socket, bytes] = {}
            for _ in range(min(BATCH, n - start)):
                s = socket.create_connection((server.host, server.port), timeout=GUARD)
                s.sendall(REQUEST)
                s.setblocking(False)
                socks.append(s)
                pending[s] = b""
                sel.register(s, selectors.EVENT_READ)
            while pending:
                ready = sel.select(GUARD)
                assert ready, f"{len(pending)} responses never came"
                for key, _ in ready:
                    s = key.fileobj
                    data = s.recv(65536)
                    assert data, "connection closed instead of kept alive"
                    got = pending[s] + data
                    head, sep, body = got.partition(b"\r\n\r\n")
                    if sep:
                        assert head.startswith(b"HTTP/1.1 200 "), head[:100]
                        length = next(int(v) for k, _, v in (
                            line.partition(b":") for line in head.split(b"\r\n")[1:])
                            if k.strip().lower() == b"content-length")
                        if len(body) >= length:
                            sel.unregister(s)
                            del pending[s]
                            continue
                    pending[s] = got
    finally:
        sel.close()
    return socks


@pytest.fixture(scope="module")
def idle_server(servers: ServerFactory) -> Server:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS * 2 + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < CONNECTIONS + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {CONNECTIONS} connections")
    return servers.start(APP, workers=1, threads=1,
                         extra_args=("--limit-connections", str(CONNECTIONS + 100)))


def test_10000_idle_keepalive_connections_hold_no_read_buffer(idle_server: Server) -> None:
    pid = idle_server.proc.pid
    # Warm-up: the allocators and the worker path at their working set.
    for s in open_idle(idle_server, 200):
        s.close()
    baseline = max(rss(pid) for _ in range(3))
    socks = open_idle(idle_server, CONNECTIONS)
    try:
        loaded = max(rss(pid) for _ in range(3))
        per = (loaded - baseline) / CONNECTIONS
        print(f"front-end RSS: {baseline / (1 << 20):.1f} MiB before, {loaded / (1 << 20):.1f} MiB "
              f"with {CONNECTIONS} idle keep-alive connections: {per / 1024:.2f} KiB per connection")
        assert per <= PER_CONNECTION_LIMIT, f"{per / 1024:.2f} KiB per idle connection"
        # Still served: one of them asks again and gets an answer.
        s = socks[len(socks) // 2]
        s.setblocking(True)
        s.sendall(REQUEST)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for s in socks:
            s.close()
