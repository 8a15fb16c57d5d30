"""One HTTP/2 client connection for the conformance cases: raw frames out (any bytes, valid
or not), frames in through hyperframe, header blocks through hpack, and the outcomes a case
can require of the server, each accepting exactly what RFC 9113 allows for it.

A case fails by raising `Fail` with what was expected and what came instead."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
CODE_NAMES = {v: k for k, v in dict(
    NO_ERROR=0, PROTOCOL_ERROR=1, INTERNAL_ERROR=2, FLOW_CONTROL_ERROR=3, SETTINGS_TIMEOUT=4,
    STREAM_CLOSED=5, FRAME_SIZE_ERROR=6, REFUSED_STREAM=7, CANCEL=8, COMPRESSION_ERROR=9,
    CONNECT_ERROR=10, ENHANCE_YOUR_CALM=11, INADEQUATE_SECURITY=12,
    HTTP_1_1_REQUIRED=13).items()}

# SETTINGS identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)

# How long the server gets to show an outcome. A bound against a silent server, never a
# speed claim: every passing outcome arrives as soon as the server reads the frames.
WAIT = float(os.environ.get("H2_CONFORMANCE_WAIT", "5"))


class Fail(AssertionError):
    """The server did something RFC 9113 does not allow for this case."""


class Deviation(Exception):
    """The server gave exactly the outcome a case names as a known deviation (README,
    "HTTP/2": each comes from the h2 crate); anything else still fails the case."""


def code_name(code: int) -> str:
    return CODE_NAMES.get(code, f"0x{code:x}")


def names(codes: Iterable[int]) -> str:
    return " or ".join(code_name(c) for c in codes)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """The bytes of one frame, exactly as given (the length field may lie: `length`)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(*pairs: tuple[int, int], ack: bool = False, stream: int = 0) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, stream,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(data: bytes = b"\0" * 8, ack: bool = False, stream: int = 0) -> bytes:
    return frame(PING, ACK if ack else 0, stream, data)


def rst(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, struct.pack(">I", code))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def goaway(last: int, code: int, debug: bytes = b"", stream: int = 0) -> bytes:
    return frame(GOAWAY, 0, stream, struct.pack(">II", last, code) + debug)


def priority(stream: int, depends_on: int = 0, weight: int = 16, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, stream, priority_fields(depends_on, weight, exclusive))


def priority_fields(depends_on: int, weight: int, exclusive: bool) -> bytes:
    return struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight - 1)


def data(stream: int, payload: bytes = b"", end: bool = True, pad: int | None = None) -> bytes:
    flags = END_STREAM if end else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, stream, bytes([pad]) + payload + b"\0" * pad)
    return frame(DATA, flags, stream, payload)


@dataclass
class Response:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


@dataclass
class Target:
    """Where a server under test listens, and whether it wants TLS (ALPN h2)."""

    name: str
    port: int
    tls: bool

    def connect(self, *, client_settings: Iterable[tuple[int, int]] = (), handshake: bool = True,
                preface: bytes = PREFACE) -> Peer:
        return Peer(self, list(client_settings), handshake, preface)


class Peer:
    """A client connection: `send` writes bytes, `read` returns the next frame (None once the
    server closed), the `expect_*` methods check an outcome."""

    def __init__(self, target: Target, client_settings: list[tuple[int, int]], handshake: bool,
                 preface: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", target.port), timeout=WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            if sock.selected_alpn_protocol() != "h2":
                raise Fail(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        self.sock = sock
        self.buf = bytearray()
        self.closed = False
        self.goaway: int | None = None  # the error code of a GOAWAY received
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        self.responses: dict[int, Response] = {}
        self.seen: list[str] = []  # what arrived, for failure messages
        self._block: tuple[int, bytearray, bool] | None = None
        if preface:
            self.send(preface)
        if handshake:
            self.send(settings(*client_settings))
            self.handshake()

    # -- sending -------------------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        try:
            self.sock.sendall(b"".join(chunks))
        except OSError:
            # The server may close first (it saw an error in an earlier frame); what it
            # sent before closing is still read and judged.
            pass

    def block(self, headers: Iterable[tuple[str, str]], huffman: bool = True) -> bytes:
        """A header block encoded with this connection's HPACK context."""
        return self.encoder.encode(list(headers), huffman=huffman)

    def request_block(self, path: str = "/", method: str = "GET",
                      extra: Iterable[tuple[str, str]] = (), scheme: str | None = None) -> bytes:
        return self.block(request_fields(path, method, extra, scheme or self.scheme))

    @property
    def scheme(self) -> str:
        return "https" if isinstance(self.sock, ssl.SSLSocket) else "http"

    def headers(self, stream: int, block: bytes, end_stream: bool = True, end_headers: bool = True,
                pad: int | None = None, prio: tuple[int, int, bool] | None = None) -> bytes:
        """A HEADERS frame carrying `block` (optionally padded and with priority fields)."""
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = block
        if prio is not None:
            flags |= PRIORITY_FLAG
            payload = priority_fields(*prio) + payload
        if pad is not None:
            flags |= PADDED
            payload = bytes([pad]) + payload + b"\0" * pad
        return frame(HEADERS, flags, stream, payload)

    def request(self, stream: int, path: str = "/", method: str = "GET",
                extra: Iterable[tuple[str, str]] = (), end_stream: bool = True) -> bytes:
        return self.headers(stream, self.request_block(path, method, extra), end_stream)

    # -- reading -------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def read(self, deadline: float | None = None) -> Frame | None:
        """The next frame; None when the server closed the connection. Fails on timeout."""
        deadline = deadline or time.monotonic() + WAIT
        while not self.closed:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    head, body = bytes(self.buf[:9]), bytes(self.buf[9:9 + length])
                    del self.buf[:9 + length]
                    try:
                        f, _ = Frame.parse_frame_header(memoryview(head))
                        f.parse_body(memoryview(body))
                    except HyperframeError as e:
                        raise Fail(f"the server sent a frame hyperframe cannot parse: {e}") from e
                    self._track(f)
                    return f
            if not self._fill(deadline):
                if self.closed:
                    break
                raise Fail(f"nothing decisive within {WAIT:.0f} s; saw: {self.saw()}")
        return None

    def saw(self) -> str:
        return ", ".join(self.seen[-8:]) or "nothing"

    def _track(self, f: Frame) -> None:
        desc = type(f).__name__.removesuffix("Frame")
        if isinstance(f, (GoAwayFrame, RstStreamFrame)):
            desc += f"({code_name(f.error_code)})"
        self.seen.append(f"{desc}[{f.stream_id}]")
        if isinstance(f, GoAwayFrame):
            self.goaway = f.error_code
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.server_settings.update(f.settings)
            self.send(settings(ack=True))
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            if isinstance(f, HeadersFrame):
                self._block = (f.stream_id, bytearray(f.data), "END_STREAM" in f.flags)
            elif self._block is not None:
                self._block[1].extend(f.data)
            if "END_HEADERS" in f.flags and self._block is not None:
                sid, raw, end = self._block
                self._block = None
                fields = [(str(k), str(v)) for k, v in self.decoder.decode(bytes(raw))]
                r = self.responses.setdefault(sid, Response())
                if r.status is None:
                    status = dict(fields).get(":status")
                    r.status = int(status) if status and status.isdigit() else None
                    r.headers = fields
                r.ended = r.ended or end
        elif isinstance(f, DataFrame):
            r = self.responses.setdefault(f.stream_id, Response())
            r.body += f.data
            r.ended = r.ended or "END_STREAM" in f.flags
        elif isinstance(f, RstStreamFrame):
            self.responses.setdefault(f.stream_id, Response()).reset = f.error_code

    def handshake(self) -> None:
        """Reads the server's preface (a SETTINGS frame, first) and the ACK of ours."""
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            f = self.read()
            if f is None:
                raise Fail(f"the connection closed during the handshake; saw: {self.saw()}")
            if not got_settings:
                if not isinstance(f, SettingsFrame) or "ACK" in f.flags:
                    raise Fail(f"the server's first frame is {type(f).__name__}, not SETTINGS "
                               "(RFC 9113 §3.4)")
                got_settings = True
            elif isinstance(f, SettingsFrame) and "ACK" in f.flags:
                got_ack = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- outcomes ------------------------------------------------------------------------

    def expect_connection_error(self, *codes: int, known: int | None = None) -> None:
        """RFC 9113 §5.4.1: GOAWAY with one of `codes`, then the TCP connection closed; or
        the connection closed without GOAWAY (§5.4.1 lets an endpoint end a connection at
        any time)."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline)
            if f is None:
                return
            if isinstance(f, GoAwayFrame):
                if f.error_code == known and known not in codes:
                    self.expect_closed("after a GOAWAY for an error, the server MUST close")
                    raise Deviation(f"GOAWAY {code_name(known)} instead of {names(codes)}")
                if f.error_code not in codes:
                    raise Fail(f"GOAWAY {code_name(f.error_code)}, expected {names(codes)}")
                self.expect_closed("after a GOAWAY for an error, the server MUST close the "
                                   "TCP connection (RFC 9113 §5.4.1)")
                return

    def expect_closed(self, why: str) -> None:
        deadline = time.monotonic() + WAIT
        try:
            while self.read(deadline) is not None:
                pass
        except Fail as e:
            raise Fail(f"{why}: still open; saw: {self.saw()}") from e

    def expect_stream_error(self, stream: int, *codes: int, malformed: bool = False,
                            known: int | None = None, known_answer: bool = False) -> None:
        """RFC 9113 §5.4.2: RST_STREAM on `stream` with one of `codes`; or a connection error
        with one of them (§5.4.1: any stream error may be treated as one), or the connection
        closed. `malformed`: a malformed request (§8.1.1), which the server MAY also answer
        with an HTTP error response (4xx) before closing or resetting the stream; the app
        must not have answered it. `known`/`known_answer`: the known deviation (a GOAWAY
        with that code / the app's answer)."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline)
            if f is None:
                return
            if isinstance(f, GoAwayFrame):
                if f.error_code == known and known not in codes:
                    raise Deviation(f"GOAWAY {code_name(known)} instead of {names(codes)}")
                if f.error_code not in codes:
                    raise Fail(f"GOAWAY {code_name(f.error_code)}, expected {names(codes)}")
                return
            if isinstance(f, RstStreamFrame) and f.stream_id == stream:
                if f.error_code not in codes:
                    raise Fail(f"RST_STREAM {code_name(f.error_code)}, expected {names(codes)}")
                return
            r = self.responses.get(stream)
            if r is not None and r.status is not None and isinstance(f, HeadersFrame):
                if malformed and 400 <= r.status < 500:
                    return
                if known_answer and 200 <= r.status < 300:
                    raise Deviation(f"answered {r.status} instead of RST_STREAM {names(codes)}")
                raise Fail(f"the stream was answered {r.status}, expected RST_STREAM "
                           f"{names(codes)}")

    def expect_alive(self) -> None:
        """No error: a PING is answered with its payload and nothing was reset or closed."""
        payload = os.urandom(8)
        self.send(ping(payload))
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline)
            if f is None:
                raise Fail(f"the connection was closed; saw: {self.saw()}")
            if isinstance(f, GoAwayFrame):
                raise Fail(f"GOAWAY {code_name(f.error_code)}, expected the frame to be "
                           "accepted")
            if isinstance(f, RstStreamFrame):
                raise Fail(f"RST_STREAM {code_name(f.error_code)} on stream {f.stream_id}, "
                           "expected the frame to be accepted")
            if isinstance(f, PingFrame) and "ACK" in f.flags:
                if f.opaque_data != payload:
                    raise Fail("a PING ACK with another payload than the PING sent")
                return

    def expect_response(self, stream: int, window: bool = False) -> Response:
        """The stream's whole response. `window`: give back the window of DATA received."""
        deadline = time.monotonic() + WAIT
        while True:
            r = self.responses.get(stream)
            if r is not None and r.ended:
                if r.status is None:
                    raise Fail("a response without a valid :status")
                return r
            f = self.read(deadline)
            if f is None:
                raise Fail(f"the connection closed before stream {stream} was answered; saw: "
                           f"{self.saw()}")
            if isinstance(f, GoAwayFrame) and f.error_code != NO_ERROR:
                raise Fail(f"GOAWAY {code_name(f.error_code)} before stream {stream} was "
                           "answered")
            if isinstance(f, RstStreamFrame) and f.stream_id == stream:
                raise Fail(f"RST_STREAM {code_name(f.error_code)} instead of a response")
            if window and isinstance(f, DataFrame) and f.flow_controlled_length:
                self.send(window_update(0, f.flow_controlled_length),
                          window_update(stream, f.flow_controlled_length))

    def expect_ok(self, stream: int) -> Response:
        r = self.expect_response(stream)
        if r.status != 200:
            raise Fail(f"status {r.status}, expected 200")
        return r

    def expect_data(self, stream: int) -> DataFrame:
        """The next DATA frame of `stream`."""
        deadline = time.monotonic() + WAIT
        while True:
            f = self.read(deadline)
            if f is None:
                raise Fail(f"the connection closed; saw: {self.saw()}")
            if isinstance(f, (GoAwayFrame, RstStreamFrame)) and (
                    isinstance(f, GoAwayFrame) or f.stream_id == stream):
                raise Fail(f"{type(f).__name__} {code_name(f.error_code)} instead of DATA")
            if isinstance(f, DataFrame) and f.stream_id == stream:
                return f

    def expect_headers(self, stream: int) -> Response:
        """Reads until the response head of `stream` arrived."""
        deadline = time.monotonic() + WAIT
        while True:
            r = self.responses.get(stream)
            if r is not None and r.status is not None:
                return r
            f = self.read(deadline)
            if f is None:
                raise Fail(f"the connection closed; saw: {self.saw()}")
            if isinstance(f, (GoAwayFrame, RstStreamFrame)) and (
                    isinstance(f, GoAwayFrame) or f.stream_id == stream):
                raise Fail(f"{type(f).__name__} {code_name(f.error_code)} instead of a "
                           "response head")


def request_fields(path: str = "/", method: str = "GET", extra: Iterable[tuple[str, str]] = (),
                   scheme: str = "http") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", scheme), (":path", path),
            (":authority", "127.0.0.1"), *extra]

