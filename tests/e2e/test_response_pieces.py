"""Responses streamed in many small pieces, faster than they are written: the pieces
queued behind the one being written go out with it in one write (http1/conn/download.rs
`gather`). Whatever the framing, the body must arrive whole and in order; under chunked
framing every piece stays a chunk of its own, as under uvicorn, since a client may read
one message per chunk (urllib3's `read_chunked`); a HEAD gets the head alone. Through a
channel of 4 slots, so that joined pieces' slots must go back for the stream to go on."""

from __future__ import annotations

import random
import socket

import pytest

from harness import Server, ServerFactory

GUARD = 60.0  # seconds: a bound against hangs, never a speed claim
pytestmark = pytest.mark.uringapi_only  # --channel-slots is ours

PIECE = 64
PIECES = 20_000


@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Server:
    return servers.start("misbehave_app:app", probe_path="/pid", workers=1,
                         extra_args=("--channel-slots", "4"))


def fetch(server: Server, request: bytes) -> tuple[bytes, bytes]:
    """Sends `request` on a new connection and reads until the server closes it: the
    response head and the raw bytes after it."""
    with socket.create_connection((server.host, server.port), timeout=GUARD) as sock:
        sock.sendall(request)
        raw = b""
        while got := sock.recv(1 << 16):
            raw += got
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no whole response head: {raw[:300]!r}"
    return head, rest


def dechunk(raw: bytes) -> list[bytes]:
    """The chunks of a chunked body (checked to end with the last chunk and no trailers)."""
    chunks, at = [], 0
    while True:
        line_end = raw.index(b"\r\n", at)
        size = int(raw[at:line_end], 16)
        at = line_end + 2
        if size == 0:
            assert raw[at:] == b"\r\n", raw[at:at + 100]
            return chunks
        chunks.append(raw[at:at + size])
        assert raw[at + size:at + size + 2] == b"\r\n"
        at += size + 2


def test_small_pieces_are_a_chunk_each_and_arrive_whole(server: Server) -> None:
    n = PIECE * PIECES
    head, raw = fetch(server, b"GET /slow?n=%d&chunk=%d HTTP/1.1\r\nHost: t\r\n"
                              b"Connection: close\r\n\r\n" % (n, PIECE))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks = dechunk(raw)
    assert b"".join(chunks) == random.Random(n).randbytes(n), "the body arrived changed"
    assert [len(c) for c in chunks] == [PIECE] * PIECES, "pieces merged into chunks"


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_small_pieces_under_content_length_and_until_close(server: Server, version: str) -> None:
    # HTTP/1.1 with the app's Content-Length; HTTP/1.0 without keep-alive: the same
    # response with its length, then a chunked stream sent as it is until the close.
    n = PIECE * PIECES
    head, raw = fetch(server, b"GET /wrong-length?declared=%d&sent=%d&pieces=%d HTTP/%s\r\n"
                              b"Host: t\r\nConnection: close\r\n\r\n"
                      % (n, n, PIECES, version.encode()))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-length: %d" % n in head.lower(), head
    assert raw == b"z" * n
    if version == "1.0":
        head, raw = fetch(server, b"GET /slow?n=%d&chunk=%d HTTP/1.0\r\n\r\n" % (n, PIECE))
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"transfer-encoding" not in head.lower(), head
        assert raw == random.Random(n).randbytes(n)


def test_a_head_request_gets_the_head_alone(server: Server) -> None:
    n = PIECE * PIECES
    head, raw = fetch(server, b"HEAD /wrong-length?declared=%d&sent=%d&pieces=%d HTTP/1.1\r\n"
                              b"Host: t\r\nConnection: close\r\n\r\n" % (n, n, PIECES))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-length: %d" % n in head.lower(), head
    assert raw == b""
