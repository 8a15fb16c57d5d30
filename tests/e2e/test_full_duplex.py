"""Full-duplex request bodies: an app that starts its response while the request body is
still coming (an echo, a transform, a proxy) keeps receiving the body until it ends, over
HTTP/1.1 (Content-Length and chunked) and HTTP/2, as uvicorn and granian do.

The lock-step tests make the point without depending on buffer sizes: the client sends one
piece of the body and waits for the app's echo of it before it sends the next, so every
piece after the first can only reach the app through the server while the response is
under way. (Before, the front end stopped reading a body once the response began: the
second piece never reached the app and the exchange hung until the client gave up; and a
response that began while the front end waited for more of the body was only seen once
the client sent more or `--timeout-body-read` passed: the short first piece shows that.)

The response then carries `Connection: close` over HTTP/1.1: when it starts, nobody knows
yet whether the body will be read to its end. An app that answers without reading the body
still gets its answer out, and the connection closes after it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

import rawhttp
from harness import HOST, SERVER_KIND, Server, ServerFactory

HANG_GUARD = 30.0  # seconds: a bound against hangs, never a speed claim
PIECE = 100_000
PIECES = 8
# The lock-step pieces: a first one short enough to travel with the request head (the app
# answers before the front end has read anything more), then larger ones.
SIZES = [1_000] + [PIECE] * (PIECES - 1)


def pattern(i: int, n: int = PIECE) -> bytes:
    """Piece i of a body: distinct bytes per piece, so a lost or reordered piece shows."""
    return (f"piece-{i:03d}:".encode() * (n // 10 + 1))[:n]


@pytest.fixture(scope="module")
def events_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("duplex") / "events.log"


@pytest.fixture(scope="module")
def duplex_server(servers: ServerFactory, events_path: Path) -> Server:
    return servers.start("duplex_app:app", workers=2,
                         env={"URINGAPI_TEST_EVENT_LOG": str(events_path)})


class ChunkReader:
    """Reads a chunked response body piece by piece from a rawhttp connection."""

    def __init__(self, conn: rawhttp.Connection) -> None:
        self.conn = conn
        self.done = False

    def read(self, n: int) -> bytes:
        """At least n body bytes (fewer only if the body ends first)."""
        got = b""
        while len(got) < n and not self.done:
            size = int(self.conn._read_line().split(b";", 1)[0], 16)
            if size == 0:
                while self.conn._read_line():
                    pass
                self.done = True
                break
            got += self.conn._read_exact(size)
            assert self.conn._read_exact(2) == b"\r\n"
        return got


def lockstep_echo(server: Server, chunked: bool) -> tuple[rawhttp.Response, bytes]:
    """Sends the pieces of SIZES, each only after the app's echo of the previous came back."""
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(sum(SIZES)))
    with rawhttp.Connection(HOST, server.port, timeout=HANG_GUARD) as conn:
        conn.send(rawhttp.build_request("POST", "/echo", [framing]))
        echoed = b""
        resp = None
        reader = None
        for i, size in enumerate(SIZES):
            piece = pattern(i, size)
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if resp is None:
                resp = conn.read_head()
                assert resp.status == 200
                assert resp.header("transfer-encoding") == "chunked"
                reader = ChunkReader(conn)
            back = reader.read(len(piece))
            assert back == piece, f"piece {i}: echoed {len(back)} bytes, not the piece sent"
            echoed += back
        if chunked:
            conn.send(b"0\r\n\r\n")
        assert reader.read(1) == b"", "nothing after the last piece"
        assert reader.done
        return resp, echoed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_each_piece_of_the_body_is_echoed_before_the_next_is_sent(duplex_server: Server,
                                                                   chunked: bool) -> None:
    resp, echoed = lockstep_echo(duplex_server, chunked)
    assert echoed == b"".join(pattern(i, size) for i, size in enumerate(SIZES))


@pytest.mark.uringapi_only  # uvicorn keeps such a connection open
def test_a_duplex_response_closes_the_connection_after_it(duplex_server: Server) -> None:
    resp, _ = lockstep_echo(duplex_server, chunked=False)
    assert "close" in resp.connection_tokens()


def bulk_echo(server: Server, path: str, size: int) -> bytes:
    """Uploads `size` bytes from a thread while the response is read: the client reads and
    writes at once, as an HTTP/1.1 client of a streaming echo must."""
    body = b"".join(pattern(i) for i in range(size // PIECE))
    with rawhttp.Connection(HOST, server.port, timeout=HANG_GUARD) as conn:
        def upload() -> None:
            conn.send(rawhttp.build_request("POST", path, [("Content-Length", str(len(body)))]))
            conn.send(body)

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        resp = conn.read_response("POST")
        sender.join(HANG_GUARD)
        assert resp.status == 200
        assert resp.body == body, f"echoed {len(resp.body)} of {len(body)} bytes"
        return resp.body


def test_a_large_body_echoed_while_it_uploads(duplex_server: Server) -> None:
    bulk_echo(duplex_server, "/echo", 40 * PIECE)
    # The server goes on serving.
    resp, _ = lockstep_echo(duplex_server, chunked=True)
    assert resp.status == 200


# Starlette runs a task that waits for http.disconnect beside a streaming response under an
# ASGI spec older than 2.4; it takes the body messages, so under uvicorn this route stalls.
# uringapi announces 2.4, where Starlette relies on send() raising instead.
@pytest.mark.uringapi_only
def test_an_unmodified_fastapi_streaming_echo(servers: ServerFactory) -> None:
    server = servers.start("duplex_app:fastapi_app", workers=1, probe_path=None)
    bulk_echo(server, "/echo", 30 * PIECE)


def test_an_answer_that_does_not_read_the_body_still_gets_out(duplex_server: Server) -> None:
    with rawhttp.Connection(HOST, duplex_server.port, timeout=HANG_GUARD) as conn:
        conn.send(rawhttp.build_request("POST", "/early", [("Content-Length", str(50 * PIECE))]))
        conn.send(pattern(0))
        resp = conn.read_response("POST")
        assert (resp.status, resp.body) == (401, b"denied")
        if SERVER_KIND == "uringapi":  # uvicorn reads the rest of the body and keeps it open
            assert "close" in resp.connection_tokens()


def wait_for_line(path: Path, prefix: str) -> str:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(prefix):
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no {prefix!r} in {path}")


def test_a_client_leaving_mid_body_reaches_the_app_as_disconnect(duplex_server: Server,
                                                                  events_path: Path) -> None:
    with rawhttp.Connection(HOST, duplex_server.port, timeout=HANG_GUARD) as conn:
        conn.send(rawhttp.build_request("POST", "/echo", [("Content-Length", str(4 * PIECE))]))
        conn.send(pattern(0))
        assert conn.read_head().status == 200
        assert ChunkReader(conn).read(PIECE) == pattern(0)
        conn.send(pattern(1)[:1000])
        conn.sock.shutdown(socket.SHUT_RDWR)
    line = wait_for_line(events_path, "disconnect ")
    assert int(line.split()[2]) >= PIECE, line


@pytest.mark.uringapi_only  # uvicorn does not speak HTTP/2
def test_each_piece_is_echoed_before_the_next_over_http2(duplex_server: Server) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.create_connection((HOST, duplex_server.port), timeout=HANG_GUARD)
    try:
        sock.sendall(conn.data_to_send())
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"),
                                   (":authority", f"{HOST}:{duplex_server.port}")])
        status = None
        ended = False
        echoed = b""

        def pump(want: int) -> None:
            """Reads frames until `want` echoed bytes (or the stream's end) have come."""
            nonlocal status, ended, echoed
            while len(echoed) < want and not ended:
                data = sock.recv(65536)
                assert data, "server closed the connection"
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = dict(ev.headers)[b":status"]
                    elif isinstance(ev, h2.events.DataReceived):
                        echoed += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, stream)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                    elif isinstance(ev, h2.events.StreamReset):
                        raise AssertionError(f"stream reset: {ev.error_code}")
                sock.sendall(conn.data_to_send())

        sent = b""
        for i in range(PIECES):
            piece = pattern(i, 16_000)  # one DATA frame, within every initial window
            conn.send_data(stream, piece, end_stream=i == PIECES - 1)
            sock.sendall(conn.data_to_send())
            sent += piece
            pump(len(sent))
            assert echoed == sent, f"piece {i}: the echo has {len(echoed)} of {len(sent)} bytes"
        pump(len(sent) + 1)
        assert status == b"200"
        assert ended
    finally:
        sock.close()
