"""A frame-level HTTP/2 client for the tests: the h2 package's hyperframe and hpack, sent and
read over a plain socket (h2c, prior knowledge), so that a test sees exactly which frames the
server sends and in which order."""

from __future__ import annotations

import socket
from typing import Iterator

import hpack
from hyperframe.frame import Frame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect(host: str, port: int, timeout: float, settings: dict[int, int] | None = None,
            source: str | None = None) -> socket.socket:
    """A connection that has sent the preface and its SETTINGS."""
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
    return sock


def frames(sock: socket.socket) -> Iterator[Frame]:
    """The server's frames, until the connection ends."""
    buf = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return
        if not data:
            return
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            buf = buf[9 + length:]
            yield frame


def send(sock: socket.socket, payload: list[bytes]) -> None:
    try:
        sock.sendall(b"".join(payload))
    except OSError:
        pass  # the server may close first; what it said is read next


def headers_block(encoder: hpack.Encoder, path: str, host: str, method: str = "GET",
                  extra: list[tuple[str, str]] | None = None) -> bytes:
    return encoder.encode([(":method", method), (":scheme", "http"), (":path", path),
                           (":authority", host), *(extra or [])])
