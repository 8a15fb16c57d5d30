"""Request-body backpressure from the app's ``receive()`` back to the socket read.

A 512 MiB chunked upload goes to an app that takes one message at a time and reads at most
100 MiB/s. The front end may have only a few body records (its body window) on their way
to the app; past that it stops reading the socket and TCP pushes back on the client. So the
memory the upload costs does not depend on its size: a thread samples the summed VmRSS of
the server's whole process group (front end and workers) from /proc, and its peak during
the upload must stay within 64 MiB of the baseline taken just before (printed in the test
log). Before the window, the worker queued every chunk as Python bytes and this upload grew
the group by about 516 MiB.

The body must arrive whole and in order: the app's SHA-256 and byte count equal the
client's, and every message but the last carries body bytes, at most the body window's
worth (the worker joins what has arrived and the app has not taken yet into one message).
An app slower than its client gets large messages, a slot or more on average: the body
came in messages of at most 16 KiB (a socket read each), 32,768 of them here, and an app
that pays per message (Starlette writing a spooled upload to disk through its thread
pool) took 4–5 times uvicorn's time for a 200 MB multipart upload. No wall-clock bound:
the rate only makes the app slower than the client.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from pathlib import Path

import pytest

from harness import Server, ServerFactory

pytestmark = pytest.mark.uringapi_only  # the process model and the window are uringapi's

APP = "slow_reader_app:app"
UPLOAD = 512 << 20
PIECE = 1 << 20
RATE = 100 << 20  # bytes a second the app reads
WARM_UP = 32 << 20
SLOT_SIZE = 64 << 10  # the server's default --slot-size
BODY_WINDOW = 4  # body records on their way to the app at once (server/src/body_window.rs)
RSS_GROWTH_LIMIT = 64 << 20
SAMPLE_EVERY = 0.05  # seconds
READ_TIMEOUT = 120.0  # hang guard for the answer; the upload itself takes ~5 s at RATE


def group_rss(server: Server) -> int:
    """Summed VmRSS of every live process in the server's process group, in bytes."""
    total = 0
    for pid in server.group_members():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # gone between listing and reading
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class GroupRssSampler:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GroupRssSampler":
        self.baseline = max(group_rss(self.server) for _ in range(3))
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.samples.append(group_rss(self.server))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def piece(index: int) -> bytes:
    """Piece `index` of the upload: 1 MiB of pseudo-random bytes, different each time."""
    seed = hashlib.sha256(b"%d" % index).digest()
    return (seed * (PIECE // len(seed)))[:PIECE]


def upload(server: Server, size: int) -> tuple[dict, str]:
    """Sends `size` bytes chunked to the app; returns its JSON answer and the client's
    SHA-256 of what it sent."""
    digest = hashlib.sha256()
    head = (b"POST /?rate=%d HTTP/1.1\r\nHost: upload.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % RATE)
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(head)
        for index in range(size // PIECE):
            data = piece(index)
            digest.update(data)
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            assert got, f"closed before the response head: {answer!r}"
            answer += got
        head_bytes, _, body = answer.partition(b"\r\n\r\n")
        assert head_bytes.startswith(b"HTTP/1.1 200 "), head_bytes
        length = next(int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            got = sock.recv(65536)
            assert got, "closed mid-body"
            body += got
    return json.loads(body), digest.hexdigest()


@pytest.fixture(scope="module")
def slow_server(servers: ServerFactory) -> Server:
    server = servers.start(APP, workers=1, threads=1)
    # Warm up: every shared-memory slot touched, the allocators at their working set.
    got, sent = upload(server, WARM_UP)
    assert (got["bytes"], got["sha256"]) == (WARM_UP, sent)
    return server


def test_512mib_upload_to_a_slow_reader_keeps_rss_bounded(slow_server: Server) -> None:
    with GroupRssSampler(slow_server) as rss:
        got, sent = upload(slow_server, UPLOAD)
    assert got["bytes"] == UPLOAD
    assert got["sha256"] == sent, "the body arrived changed"
    # Non-empty messages of at most the window's worth, a slot or more on average.
    assert 0 < got["smallest"] and SLOT_SIZE < got["largest"] <= BODY_WINDOW * SLOT_SIZE, got
    assert UPLOAD // (BODY_WINDOW * SLOT_SIZE) <= got["messages"] <= UPLOAD // SLOT_SIZE, got
    assert len(rss.samples) >= 5, f"only {len(rss.samples)} RSS samples during the upload"
    peak = max(rss.samples)
    growth = peak - rss.baseline
    print(f"server group RSS (front end + {slow_server.workers} worker): baseline "
          f"{rss.baseline / (1 << 20):.1f} MiB, peak {peak / (1 << 20):.1f} MiB over "
          f"{len(rss.samples)} samples, growth {growth / (1 << 20):.1f} MiB "
          f"for a {UPLOAD >> 20} MiB upload read at {RATE >> 20} MiB/s")
    assert growth <= RSS_GROWTH_LIMIT, (
        f"server group RSS grew {growth / (1 << 20):.1f} MiB during the upload")
