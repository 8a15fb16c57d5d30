"""RFC 6455 on the wire, over raw sockets (wsraw.py): the opening handshake's refusals,
and a client that breaks the protocol. Each bad client must get a close frame with the
right code (RFC 6455 §7.4.1: 1002 protocol error, 1007 bad data, 1009 too big), nothing of
its bad message may reach the app (the echo route sends nothing back), the server must
then close TCP, and a well-behaved WebSocket on the same server must not notice.
Also the server's keep-alive pings (--ws-ping-interval/--ws-ping-timeout) and a client
that never reads.

URINGAPI_TEST_SERVER=uvicorn runs the same tests against uvicorn (websockets backend).
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from websockets.sync.client import connect as connect_sync

import rawhttp
import wsraw
from harness import ServerFactory
from wsraw import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_payload, encode
from wsserver import GUARD, WsServer, new_tag, start


@pytest.fixture(scope="module")
def server(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-protocol"), "fastapi")


def raw_exchange(server: WsServer, request: bytes) -> bytes:
    """Sends a request, returns the response head (the server may then close)."""
    with socket.create_connection((server.host, server.port), timeout=GUARD) as s:
        s.sendall(request)
        head, _ = wsraw.read_head(s)
        return head


# ---------------------------------------------------------------------------------------
# opening handshake (RFC 6455 §4.2)


def test_handshake_answer(server: WsServer) -> None:
    with wsraw.connect(server.host, server.port, "/ws/echo", timeout=GUARD) as c:
        head = c.response_head
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert (wsraw.header(head, "upgrade") or "").lower() == "websocket"
        assert "upgrade" in (wsraw.header(head, "connection") or "").lower()
        assert wsraw.header(head, "sec-websocket-extensions") is None  # none was offered
        assert wsraw.header(head, "sec-websocket-protocol") is None


def test_accept_value_matches_the_rfc_example(server: WsServer) -> None:
    """The worked example of RFC 6455 §1.3."""
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    request, _ = wsraw.handshake_request(server.host, server.port, "/ws/echo", key=key)
    head = raw_exchange(server, request)
    assert wsraw.status_of(head) == 101, head
    assert wsraw.header(head, "sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.uringapi_only  # uvicorn (websockets backend) answers 400 and names no version
def test_unsupported_version_is_426_naming_13(server: WsServer) -> None:
    """RFC 6455 §4.2.2: an error such as 426 and the versions the server understands."""
    request, _ = wsraw.handshake_request(server.host, server.port, "/ws/echo", version="8")
    head = raw_exchange(server, request)
    assert wsraw.status_of(head) == 426, head
    assert wsraw.header(head, "sec-websocket-version") == "13", head


@pytest.mark.parametrize("key", [b"", b"c2hvcnQ=", b"not base64 at all!!!!!!!"])
def test_bad_key_is_400(server: WsServer, key: bytes) -> None:
    request, _ = wsraw.handshake_request(server.host, server.port, "/ws/echo", key=key or b"x")
    if not key:
        request = b"\r\n".join(line for line in request.split(b"\r\n")
                               if not line.startswith(b"Sec-WebSocket-Key"))
    head = raw_exchange(server, request)
    assert wsraw.status_of(head) == 400, head


def _read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


@pytest.mark.uringapi_only  # uvicorn (websockets backend) answers 101
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upgrade_with_a_body_is_400_and_the_body_never_becomes_frames(server: WsServer,
                                                                       framing: str) -> None:
    """RFC 6455 gives the handshake no body. Were the bytes behind the head accepted, they
    would be read as the client's first frame (here a well-formed masked text frame) that
    the app would echo: the request is refused, nothing is echoed, the connection closes."""
    frame = encode(TEXT, b"smuggled")
    if framing == "chunked":
        extra, body = [("Transfer-Encoding", "chunked")], b"%x\r\n%s\r\n0\r\n\r\n" % (
            len(frame), frame)
    else:
        extra, body = [("Content-Length", str(len(frame)))], frame
    request, _ = wsraw.handshake_request(server.host, server.port, "/ws/echo", headers=extra)
    with socket.create_connection((server.host, server.port), timeout=GUARD) as s:
        s.sendall(request + body)
        head, rest = wsraw.read_head(s)
        assert wsraw.status_of(head) == 400, head
        rest += _read_to_eof(s)
    assert b"smuggled" not in rest, rest
    # An empty body (Content-Length: 0, as some clients send) is still a handshake.
    request, _ = wsraw.handshake_request(server.host, server.port, "/ws/echo",
                                         headers=[("Content-Length", "0")])
    assert wsraw.status_of(raw_exchange(server, request)) == 101


# ---------------------------------------------------------------------------------------
# a client that breaks the protocol


def _bad_utf8_close() -> bytes:
    return encode(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")


BAD_CLIENTS = [
    # (case, frames the client sends, close code the server must send)
    ("unmasked text frame", encode(TEXT, b"hello", mask=False), 1002),
    ("unmasked binary frame", encode(BINARY, b"\x00" * 200, mask=False), 1002),
    ("text with bad UTF-8", encode(TEXT, b"ok so far \xff\xfe"), 1007),
    ("UTF-8 surrogate", encode(TEXT, b"\xed\xa0\x80"), 1007),
    ("bad UTF-8 across fragments",
     encode(TEXT, b"caf\xc3", fin=False) + encode(CONT, b"\x28 end"), 1007),
    ("truncated UTF-8 at the end", encode(TEXT, b"euro \xe2\x82"), 1007),
    ("close reason with bad UTF-8", _bad_utf8_close(), 1007),
    ("ping payload over 125 bytes", encode(PING, b"p" * 126), 1002),
    ("pong payload over 125 bytes", encode(PONG, b"p" * 200), 1002),
    ("fragmented ping", encode(PING, b"half", fin=False), 1002),
    ("reserved data opcode 3", encode(0x3, b"x"), 1002),
    ("reserved data opcode 7", encode(0x7, b"x"), 1002),
    ("reserved control opcode 11", encode(0xB, b""), 1002),
    ("reserved control opcode 15", encode(0xF, b"x"), 1002),
    ("RSV1 without a negotiated extension", encode(TEXT, b"x", rsv=4), 1002),
    ("RSV2", encode(BINARY, b"x", rsv=2), 1002),
    ("RSV3 on a ping", encode(PING, b"x", rsv=1), 1002),
    ("continuation with no message started", encode(CONT, b"orphan"), 1002),
    ("new message inside a fragmented one",
     encode(TEXT, b"first", fin=False) + encode(TEXT, b"second"), 1002),
    ("close with a one-byte payload", encode(CLOSE, b"\x03"), 1002),
    ("close code 999", encode(CLOSE, close_payload(999)), 1002),
    ("close code 1005 (reserved, never on the wire)", encode(CLOSE, close_payload(1005)), 1002),
    ("close code 1006 (reserved, never on the wire)", encode(CLOSE, close_payload(1006)), 1002),
    ("close code 1100 (unassigned)", encode(CLOSE, close_payload(1100)), 1002),
]


@pytest.mark.parametrize("case, frames, code", BAD_CLIENTS, ids=[c[0] for c in BAD_CLIENTS])
def test_bad_client_is_closed_with_the_right_code(server: WsServer, case: str, frames: bytes,
                                                  code: int) -> None:
    with wsraw.connect(server.host, server.port, "/ws/echo", timeout=GUARD) as healthy, \
            wsraw.connect(server.host, server.port, "/ws/echo", timeout=GUARD) as bad:
        bad.send(frames)
        before, close = bad.read_until_close()
        assert before == [], f"{case}: the server sent {before} before closing (it reached the app?)"
        assert close.close_code == code, (case, close.close_code, close.payload)
        assert bad.closed_by_server(), f"{case}: the server kept TCP open after its close frame"
        # Nothing else harmed: the healthy socket echoes, and HTTP answers.
        healthy.send(encode(TEXT, b"still here"))
        frame = healthy.read_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"still here")
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        assert c.request("GET", "/plain", [("Connection", "close")]).status == 200


def test_close_handshake_is_echoed_then_tcp_closed(server: WsServer) -> None:
    """A clean close: the server echoes the client's code (RFC 6455 §5.5.1) and the app sees
    it as websocket.disconnect."""
    tag = new_tag()
    with wsraw.connect(server.host, server.port, f"/ws/echo?tag={tag}", timeout=GUARD) as c:
        c.send(encode(TEXT, b"one"))
        frame = c.read_frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"one")
        c.send(encode(CLOSE, close_payload(4000, "done")))
        before, close = c.read_until_close()
        assert before == []
        assert close.close_code == 4000
        assert c.closed_by_server()
    assert server.events.wait("ws-disconnect", tag)[3:5] == ["4000", "done"]


def test_empty_close_frame_is_answered(server: WsServer) -> None:
    """A close without a status code is legal; the app sees 1005 (no status received)."""
    tag = new_tag()
    with wsraw.connect(server.host, server.port, f"/ws/echo?tag={tag}", timeout=GUARD) as c:
        c.send(encode(CLOSE, b""))
        before, close = c.read_until_close()
        assert before == [] and close.close_code in (None, 1000), close
        assert c.closed_by_server()
    assert server.events.wait("ws-disconnect", tag)[3] == "1005"


# ---------------------------------------------------------------------------------------
# keep-alive pings and a client that never reads


@pytest.fixture(scope="module")
def pinging(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-ping"), "fastapi",
                 "--ws-ping-interval", "0.5", "--ws-ping-timeout", "1")


def test_server_pings_and_closes_a_silent_client_with_1011(pinging: WsServer) -> None:
    with wsraw.connect(pinging.host, pinging.port, "/ws/echo", timeout=GUARD) as c:
        # Answer two pings: the socket stays open.
        for _ in range(2):
            ping = c.read_frame()
            assert ping.opcode == PING, ping
            c.send(encode(PONG, ping.payload))
        c.send(encode(TEXT, b"alive"))
        frames = []
        while not frames or frames[-1].opcode != TEXT:
            frames.append(c.read_frame())
        assert frames[-1].payload == b"alive"
        # Then stop answering: the server gives up with 1011 once the ping timeout passes.
        before, close = c.read_until_close()
        assert all(f.opcode == PING for f in before), before
        assert close.close_code == 1011, close
        assert c.closed_by_server()


# uvicorn (websockets backend) never unblocks the app: its keep-alive ping waits to be
# written behind the unread data, so the ping timeout never starts; memory stays bounded.
@pytest.mark.uringapi_only
def test_client_that_never_reads_is_dropped_and_the_app_unblocked(pinging: WsServer) -> None:
    """/ws/flood sends 64 KiB messages in a loop to a client that never reads. The server
    must not buffer without bound: the app's send() blocks (backpressure), the keep-alive
    ping goes unanswered, the socket is closed, and the app's send() then raises. A healthy
    WebSocket on the same server (the sync client answers pings from its own thread) keeps
    working throughout."""
    tag = new_tag()
    with connect_sync(pinging.url("/ws/echo")) as healthy:
        with wsraw.connect(pinging.host, pinging.port, f"/ws/flood?tag={tag}", timeout=GUARD,
                           rcvbuf=4096):
            healthy.send("before")
            assert healthy.recv(GUARD) == "before"
            end = pinging.events.wait("ws-flood-end", tag)
            sent = int(end[3])
            assert sent < 64 << 20, f"the app could send {sent} bytes to a client reading none"
            for i in range(3):
                healthy.send(f"healthy {i}")
                assert healthy.recv(GUARD) == f"healthy {i}"


# ---------------------------------------------------------------------------------------
# what the operator sees


@pytest.fixture(scope="module")
def debug_server(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-debug"), "fastapi", log_level="debug")


@pytest.mark.uringapi_only  # the wording and levels of the log are uringapi's own
@pytest.mark.parametrize("case, frames, code", [BAD_CLIENTS[0], BAD_CLIENTS[2], BAD_CLIENTS[7]],
                         ids=["unmasked", "bad UTF-8", "long ping"])
def test_bad_client_is_logged_at_debug_only(debug_server: WsServer, case: str, frames: bytes,
                                            code: int) -> None:
    """A misbehaving client is the client's problem: the server notes it at debug level,
    naming the peer and the close code, and not above; the bad frame sent fifty times
    over is noted a bounded number of times, not once per frame."""
    with wsraw.connect(debug_server.host, debug_server.port, "/ws/echo", timeout=GUARD) as bad:
        peer = "%s:%d" % bad.sock.getsockname()
        try:
            bad.send(frames * 50)
        except OSError:
            pass  # the server may close before it has read all fifty
        _, close = bad.read_until_close()
        assert close.close_code == code
        assert bad.closed_by_server()
    deadline = time.monotonic() + GUARD
    while True:
        lines = [line for line in debug_server.server.stderr().splitlines() if peer in line]
        if any(str(code) in line for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(str(code) in line for line in lines), f"no log line names {peer} and {code}"
    assert all("DEBUG" in line for line in lines), lines
    assert len(lines) <= 3, lines
