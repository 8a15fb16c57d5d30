"""A WebSocket client over a plain socket, for what a well-behaved client library will not
send: unmasked frames, bad UTF-8, oversized or fragmented control frames, reserved opcodes
and bits, and a client that never reads. RFC 6455 §5.2 frame layout; everything is bounded
by the socket timeout (a hang guard, not a speed assertion).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_value(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2, item 5.4)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


@dataclass
class Frame:
    fin: bool
    rsv: int  # the three RSV bits as a number 0..7
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        assert self.opcode == CLOSE, self
        return self.payload[2:].decode("utf-8")


def encode(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
           mask: bool = True, length: int | None = None) -> bytes:
    """One frame. `length` overrides the payload length field (for lying headers)."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if len(payload) < 4096 \
        else _mask_fast(payload, key)
    return bytes(head) + key + masked


def _mask_fast(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class Conn:
    """One raw WebSocket connection after a successful (101) handshake."""

    def __init__(self, sock: socket.socket, response_head: bytes, leftover: bytes) -> None:
        self.sock = sock
        self.response_head = response_head
        self.buf = bytearray(leftover)

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes read")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self) -> Frame:
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "a server must not mask its frames (RFC 6455 §5.1)"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, self._need(n))

    def read_until_close(self) -> tuple[list[Frame], Frame]:
        """Frames the server sent before its close frame, and the close frame."""
        before = []
        while True:
            frame = self.read_frame()
            if frame.opcode == CLOSE:
                return before, frame
            before.append(frame)

    def closed_by_server(self) -> bool:
        """After the close handshake the server must close TCP (RFC 6455 §7.1.1): True
        when the next read sees end of stream (or a reset), within the socket timeout."""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def handshake_request(host: str, port: int, path: str,
                      headers: list[tuple[str, str]] | None = None,
                      key: bytes | None = None, version: str = "13") -> tuple[bytes, bytes]:
    key = key or base64.b64encode(os.urandom(16))
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
             f"Sec-WebSocket-Version: {version}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head (up to and with the blank line) and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower().encode():
            return v.strip().decode("latin-1")
    return None


def connect(host: str, port: int, path: str, *, timeout: float,
            headers: list[tuple[str, str]] | None = None, rcvbuf: int | None = None) -> Conn:
    """Opens a WebSocket with a raw handshake and checks the 101 answer (RFC 6455 §4.2.2)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    request, key = handshake_request(host, port, path, headers)
    sock.sendall(request)
    head, rest = read_head(sock)
    assert status_of(head) == 101, head
    assert header(head, "sec-websocket-accept") == accept_value(key).decode(), head
    return Conn(sock, head, rest)
