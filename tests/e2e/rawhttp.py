"""A minimal HTTP/1.x client over a plain socket, for tests that must see the wire.

httpx hides framing (chunked vs Content-Length, interim 100 responses, who closed the
connection); these tests assert on exactly that, so they read the bytes themselves.
Every read has a socket timeout: a server that stops answering fails the test instead
of hanging it.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 30.0


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False
    # Sizes of the chunks as they were framed on the wire (chunked responses only).
    chunk_sizes: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive); None if absent. Fails if
        the header appears more than once: use header_all for those."""
        values = self.header_all(name)
        assert len(values) <= 1, f"header {name!r} appears {len(values)} times: {values}"
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def connection_tokens(self) -> set[str]:
        return {
            t.strip().lower()
            for v in self.header_all("connection")
            for t in v.split(",")
            if t.strip()
        }


def build_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str = "127.0.0.1",
) -> bytes:
    """Request bytes. Adds Host (unless given) and Content-Length when there is a body
    and neither Content-Length nor Transfer-Encoding was given."""
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        headers.insert(0, ("Host", host))
    if body and not names & {"content-length", "transfer-encoding"}:
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


class Connection:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT,
                 tls: ssl.SSLContext | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.host = host
        self._buf = b""

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> Response:
        self.send(build_request(method, target, headers, body, version, self.host))
        return self.read_response(method)

    # -- reading ---------------------------------------------------------------

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError(f"peer closed mid-line; buffered {self._buf[:200]!r}")
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ConnectionError(
                    f"peer closed after {len(self._buf)} of {n} expected bytes"
                )
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_head(self) -> Response:
        """Status line and headers of the next response (interim 1xx included)."""
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError(
                    f"peer closed before a complete response head; got {self._buf[:300]!r}"
                )
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version.startswith("HTTP/1."), f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), f"bad header line {line!r}"
            headers.append((name, value.strip()))
        return Response(version, int(status), reason[0] if reason else "", headers)

    def read_body(self, resp: Response, method: str) -> Response:
        te = [t.strip().lower() for v in resp.header_all("transfer-encoding") for t in v.split(",")]
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        if te:
            assert te[-1] == "chunked", f"unexpected transfer-encoding {te}"
            assert resp.header("content-length") is None, "both Content-Length and chunked"
            resp.chunked = True
            body = []
            while True:
                size_line = self._read_line()
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._read_line():  # trailers, up to the empty line
                        pass
                    break
                body.append(self._read_exact(size))
                resp.chunk_sizes.append(size)
                assert self._read_exact(2) == b"\r\n", "chunk data not followed by CRLF"
            resp.body = b"".join(body)
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")))
        else:  # delimited by the server closing the connection (RFC 9112 §6.3 rule 8)
            resp.body = self.read_until_closed()
        return resp

    def read_response(self, method: str = "GET") -> Response:
        """The next final response; fails on an unexpected interim (1xx) response."""
        resp = self.read_head()
        assert resp.status >= 200, f"unexpected interim response {resp.status}"
        return self.read_body(resp, method)

    def read_until_closed(self) -> bytes:
        """Everything until the peer closes; the socket timeout bounds the wait."""
        while self._fill():
            pass
        data, self._buf = self._buf, b""
        return data

    def closed_by_peer(self) -> bool:
        """True if the peer closed (EOF or reset) with no further bytes, within the
        socket timeout. Extra bytes fail the assertion: they are an unexpected response."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        assert not data and not self._buf, f"unexpected bytes after response: {(self._buf + data)[:300]!r}"
        return True
