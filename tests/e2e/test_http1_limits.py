"""The front end stays bounded: slow clients are cut at their deadlines, and 2 GiB going
either way does not grow the front end's memory.

Slow clients: a head trickled one byte a second is answered 408 and closed at
--timeout-header-read; a body that pauses longer than --timeout-body-read likewise; an idle
keep-alive connection is closed after --timeout-keep-alive. "At the deadline" is checked
as "before the trickle could have finished", never as a wall-clock maximum.

Memory: 2 GiB uploads (Content-Length and chunked) to an app that counts and CRCs the body,
and 2 GiB downloads (Content-Length and chunked) that the app streams in 1 MiB pieces. The
client checks the byte count and CRC-32 end to end while a thread samples the VmRSS of the
front-end process (the `uringapi` process, not its Python workers) from /proc. Its peak
during the transfer must stay within 64 MiB of the baseline taken just before it.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from harness import APPS_DIR, Server, ServerFactory

sys.path.insert(0, str(APPS_DIR))
from echo_app import download_piece  # noqa: E402  (the stream the app sends, rebuilt here)

pytestmark = pytest.mark.uringapi_only  # the timeouts and the process model are uringapi's

APP = "echo_app:app"
DEADLINE = 2  # seconds, for each of the three --timeout-* options the slow tests set
READ_TIMEOUT = 30.0  # hang guard for every socket read, far past any deadline here

GIB2 = 2 << 30
PIECE = 1 << 20
RSS_GROWTH_LIMIT = 64 << 20
RSS_SAMPLE_EVERY = 0.05  # seconds
WARM_UP = 64 << 20  # bytes moved each way before any baseline (see bulk_server)


# -- size limits ---------------------------------------------------------------------------

BODY_LIMIT = 1000
LINE_LIMIT = 200
FIELDS_LIMIT = 6
FIELD_SIZE_LIMIT = 100
CONNECTIONS_LIMIT = 4


@pytest.fixture(scope="module")
def sized_server(servers: ServerFactory) -> Server:
    # The factory starts one front-end thread: --limit-connections counts per thread.
    return servers.start(APP, extra_args=(
        "--limit-request-body", str(BODY_LIMIT),
        "--limit-request-line", str(LINE_LIMIT),
        "--limit-request-fields", str(FIELDS_LIMIT),
        "--limit-request-field-size", str(FIELD_SIZE_LIMIT),
        "--limit-connections", str(CONNECTIONS_LIMIT),
    ))


def read_until_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def exchange_raw(server: Server, data: bytes) -> bytes:
    """Sends `data`, then reads until the server closes (every case here ends in a close)."""
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(data)
        return read_until_close(sock)


def post(length_header: bytes, body: bytes, method: bytes = b"POST") -> bytes:
    return (method + b" /?mode=count HTTP/1.1\r\nHost: sized.test\r\n" + length_header
            + b"Connection: close\r\n\r\n" + body)


def chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 300]), body[i:i + 300])
                    for i in range(0, len(body), 300)) + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_at_the_limit_passes_and_past_it_gets_413(sized_server: Server, framing: str) -> None:
    def send(size: int) -> bytes:
        body = b"b" * size
        if framing == "length":
            return exchange_raw(sized_server, post(b"Content-Length: %d\r\n" % size, body))
        return exchange_raw(sized_server, post(b"Transfer-Encoding: chunked\r\n", chunked(body)))

    ok = send(BODY_LIMIT)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n"), ok[:300]
    assert json.loads(ok.partition(b"\r\n\r\n")[2])["bytes"] == BODY_LIMIT
    refused = send(BODY_LIMIT + 1)
    assert refused.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), refused[:300]
    assert b"\r\nconnection: close\r\n" in refused.lower()
    assert refused.count(b"HTTP/1.1 ") == 1, refused


def test_413_to_a_head_request_has_no_body(sized_server: Server) -> None:
    got = exchange_raw(sized_server, post(b"Content-Length: %d\r\n" % (BODY_LIMIT + 1),
                                          b"b" * (BODY_LIMIT + 1), method=b"HEAD"))
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), got[:300]
    assert rest == b"", rest  # RFC 9110 §9.3.2


def test_a_trailer_section_that_never_ends_gets_400_and_close(sized_server: Server) -> None:
    # Trailer lines are part of no body and go to no app: a client sending them for ever
    # must not keep its request (and the app waiting for the body's end) alive for ever.
    # 1 MiB of valid trailer lines, never the empty line that ends them.
    trailers = b"X-T: " + b"t" * 90 + b"\r\n"
    with socket.create_connection((sized_server.host, sized_server.port), timeout=READ_TIMEOUT) as sock:
        try:
            sock.sendall(post(b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n0\r\n"))
            for _ in range((1 << 20) // len(trailers)):
                sock.sendall(trailers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the last line went
        got = read_until_close(sock)
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got[:300]


@pytest.mark.parametrize("case,expected", [
    ("line-at-limit", b"200"),
    ("line-past-limit", b"414"),
    ("fields-at-limit", b"200"),
    ("fields-past-limit", b"431"),
    ("field-at-limit", b"200"),
    ("field-past-limit", b"431"),
])
def test_head_limits(sized_server: Server, case: str, expected: bytes) -> None:
    over = case.endswith("past-limit")
    close = b"Connection: close\r\n"  # a field too, counted below
    if case.startswith("line"):
        # "GET " + target + " HTTP/1.1" is the request line, without its CRLF.
        target = b"/" + b"a" * (LINE_LIMIT - len(b"GET / HTTP/1.1") + over)
        request = b"GET " + target + b" HTTP/1.1\r\nHost: sized.test\r\n" + close + b"\r\n"
    elif case.startswith("fields"):
        extra = [b"X-F%d: v\r\n" % i for i in range(FIELDS_LIMIT - 2 + over)]
        request = b"GET / HTTP/1.1\r\nHost: sized.test\r\n" + b"".join(extra) + close + b"\r\n"
    else:
        # --limit-request-field-size counts the name and the value.
        value = b"v" * (FIELD_SIZE_LIMIT - len(b"X-Long") + over)
        request = (b"GET / HTTP/1.1\r\nHost: sized.test\r\nX-Long: " + value + b"\r\n"
                   + close + b"\r\n")
    got = exchange_raw(sized_server, request)
    assert got.startswith(b"HTTP/1.1 " + expected + b" "), (case, got[:300])
    assert b"\r\nconnection: close\r\n" in got.lower()


def test_zero_head_limits_mean_no_limit_of_their_own(servers: ServerFactory) -> None:
    """gunicorn's 0 (no limit) for the three head limits: a 9 KB request line, 150 fields
    and a 9 KB field (each past its default) pass, over HTTP/1.1 and HTTP/2; only the whole head's 64 KiB bound
    is left (a limit of 0 used to answer every request 414 or 431)."""
    server = servers.start(APP, extra_args=(
        "--limit-request-line", "0", "--limit-request-fields", "0",
        "--limit-request-field-size", "0",
    ))
    # (The echo app also returns what it saw in a response field: the head stays small.)
    target = b"/" + b"a" * 9_000
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(150))
    request = (b"GET " + target + b" HTTP/1.1\r\nHost: sized.test\r\n" + fields
               + b"X-Long: " + b"v" * 9_000 + b"\r\nConnection: close\r\n\r\n")
    got = exchange_raw(server, request)
    assert got.startswith(b"HTTP/1.1 200 "), got[:300]
    seen = json.loads(got.partition(b"\r\n\r\n")[2])
    assert seen["path"] == target.decode() and len(seen["headers"]) == 153
    with httpx.Client(http1=False, http2=True, timeout=READ_TIMEOUT) as h2:
        r = h2.get(f"http://{server.host}:{server.port}{target.decode()}",
                   headers=[(f"x-f{i}", "v") for i in range(150)] + [("x-long", "v" * 9_000)])
    assert (r.http_version, r.status_code) == ("HTTP/2", 200)
    too_big = b"GET / HTTP/1.1\r\nHost: sized.test\r\nX-Big: " + b"v" * 70_000 + b"\r\n\r\n"
    assert exchange_raw(server, too_big).startswith(b"HTTP/1.1 431 ")


def test_connections_past_the_limit_are_closed_at_once(sized_server: Server) -> None:
    held = [socket.create_connection((sized_server.host, sized_server.port), timeout=READ_TIMEOUT)
            for _ in range(CONNECTIONS_LIMIT)]
    try:
        for sock in held:  # each is served, so each counts
            sock.sendall(b"GET /held HTTP/1.1\r\nHost: sized.test\r\n\r\n")
            assert sock.recv(1 << 16).startswith(b"HTTP/1.1 200 OK\r\n")
        extra = exchange_raw(sized_server, b"GET /extra HTTP/1.1\r\nHost: sized.test\r\n\r\n")
        assert extra == b"", extra[:300]
    finally:
        for sock in held:
            sock.close()
    # Room again once they are gone (the front end notices the closes asynchronously).
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        got = exchange_raw(sized_server,
                           b"GET /again HTTP/1.1\r\nHost: sized.test\r\nConnection: close\r\n\r\n")
        if got or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:300]


# -- slow clients --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_server(servers: ServerFactory) -> Server:
    return servers.start(APP, extra_args=(
        "--timeout-header-read", str(DEADLINE),
        "--timeout-body-read", str(DEADLINE),
        "--timeout-keep-alive", str(DEADLINE),
    ))


@dataclass
class Trickle:
    sent: int  # bytes of the trickled part that went out before the server answered
    received: bytes  # everything the server sent, up to its close


def trickle(server: Server, prefix: bytes, slow: bytes, every: float,
            answered_first: bool = False) -> Trickle:
    """Sends `prefix` at once (and, if `answered_first`, reads its whole response: it is a
    complete request), then `slow` one byte every `every` seconds, stopping as soon as the
    server sends anything or closes; then reads until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(prefix)
        if answered_first:
            reader = BulkReader(sock, 1 << 16)
            status, headers = reader.head()
            assert status == b"HTTP/1.1 200 OK", status
            reader.skip(int(headers[b"content-length"]))
            assert reader.start == reader.end, "bytes after the first response"
        sent = 0
        for byte in slow:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                break
        received = read_until_close(sock)
    return Trickle(sent, received)


HEAD = (b"GET / HTTP/1.1\r\nHost: slow.test\r\nUser-Agent: slowloris\r\nX-Pad: "
        + b"p" * 20 + b"\r\n\r\n")
FIRST = b"GET /first HTTP/1.1\r\nHost: slow.test\r\n\r\n"


@pytest.mark.parametrize("prefix", [b"", FIRST], ids=["first-request", "after-a-request"])
def test_head_trickled_one_byte_a_second_gets_408_and_close(slow_server: Server,
                                                            prefix: bytes) -> None:
    # With a first request, its answer is read before the slow head begins: the deadline
    # holds for every head on a connection, not only the first.
    got = trickle(slow_server, prefix, HEAD, every=1.0, answered_first=bool(prefix))
    assert got.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got.received[:300]
    assert b"\r\nconnection: close\r\n" in got.received.lower()
    # It was closed (the read above ended on EOF) well before the head could be complete.
    assert got.sent < len(HEAD), "the server let the whole head trickle in"


def test_body_pausing_past_the_deadline_gets_408_and_close(slow_server: Server) -> None:
    head = (b"POST /?mode=count HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 20\r\n\r\n")
    # Each pause (1.5 deadlines) is longer than --timeout-body-read allows.
    got = trickle(slow_server, head, b"b" * 20, every=1.5 * DEADLINE)
    assert got.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got.received[:300]
    assert b"\r\nconnection: close\r\n" in got.received.lower()
    assert got.sent < 20, "the server waited for the whole slow body"


def test_body_trickled_below_the_minimum_rate_gets_408_and_close(slow_server: Server) -> None:
    # Every pause (0.5 s) is shorter than --timeout-body-read, so only --min-body-rate
    # (default 500 bytes/s after the first --timeout-body-read) can cut this slow POST.
    head = (b"POST /?mode=count HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 40\r\n\r\n")
    got = trickle(slow_server, head, b"b" * 40, every=0.5)
    assert got.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got.received[:300]
    assert b"\r\nconnection: close\r\n" in got.received.lower()
    assert got.sent < 40, "the server waited for the whole trickled body"


def test_idle_keep_alive_connection_is_closed(slow_server: Server) -> None:
    request = b"GET /idle HTTP/1.1\r\nHost: slow.test\r\n\r\n"
    with socket.create_connection((slow_server.host, slow_server.port),
                                  timeout=READ_TIMEOUT) as sock:
        reader = BulkReader(sock)
        for _ in range(2):  # the connection is kept between requests...
            sock.sendall(request)
            status, headers = reader.head()
            assert status == b"HTTP/1.1 200 OK"
            reader.skip(int(headers[b"content-length"]))
        idle_from = time.monotonic()
        # ...and closed once idle for --timeout-keep-alive (EOF, no bytes; the socket
        # timeout is only a hang guard).
        assert reader.read_to_eof() == b""
        idle = time.monotonic() - idle_from
    # Not before the deadline: a lower bound, with room for timer granularity.
    assert idle >= DEADLINE * 0.75, f"closed after {idle:.2f}s idle"


@pytest.mark.uringapi_only  # uvicorn has no head or body read timeouts to turn off
def test_zero_turns_the_read_timeouts_off_and_keep_alive_off(servers: ServerFactory) -> None:
    """0 for --timeout-header-read and --timeout-body-read means no limit (it used to mean
    an instant 408 for every head that came in two reads, and for every body); 0 for
    --timeout-keep-alive means no keep-alive, as under uvicorn and gunicorn: each response
    closes its connection, and a new connection still gets its first request through (it
    used to be closed before its first byte could be read)."""
    server = servers.start(APP, extra_args=(
        "--timeout-header-read", "0", "--timeout-body-read", "0", "--min-body-rate", "0",
        "--timeout-keep-alive", "0",
    ))
    got = trickle(server, b"", HEAD, every=0.05)  # 80-odd reads
    assert got.received.startswith(b"HTTP/1.1 200 OK\r\n"), got.received[:300]
    assert got.sent == len(HEAD)
    assert b"\r\nconnection: close\r\n" in got.received.lower(), got.received[:300]
    head = b"POST /?mode=count HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 6\r\n\r\n"
    got = trickle(server, head, b"b" * 6, every=0.5)
    assert got.received.startswith(b"HTTP/1.1 200 OK\r\n"), got.received[:300]
    assert got.sent == 6


# -- memory under bulk transfers -----------------------------------------------------------

@dataclass
class RssSampler:
    """Samples VmRSS (and its parts) of one process every RSS_SAMPLE_EVERY seconds."""
    pid: int
    samples: list[dict[str, int]] = field(default_factory=list)

    def read(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def __enter__(self) -> "RssSampler":
        # The process must be the front end itself: it runs the io_uring threads.
        threads = {p.read_text().strip() for p in Path(f"/proc/{self.pid}/task").glob("*/comm")}
        assert any(t.startswith("uringapi-io") for t in threads), threads
        self.baseline = max((self.read() for _ in range(3)), key=lambda s: s["VmRSS"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_EVERY):
            self.samples.append(self.read())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        assert len(self.samples) >= 5, f"only {len(self.samples)} RSS samples during the transfer"
        peak = max(self.samples, key=lambda s: s["VmRSS"])
        growth = peak["VmRSS"] - self.baseline["VmRSS"]
        mib = {k: round(v / (1 << 20), 1) for k, v in peak.items()}
        base = {k: round(v / (1 << 20), 1) for k, v in self.baseline.items()}
        print(f"front-end RSS: baseline {base} MiB, peak {mib} MiB over "
              f"{len(self.samples)} samples, growth {growth / (1 << 20):.1f} MiB")
        assert growth < RSS_GROWTH_LIMIT, (
            f"front-end RSS grew {growth / (1 << 20):.1f} MiB (baseline {base}, peak {mib} MiB)")


class BulkReader:
    """Reads responses with large recv_into calls into one buffer; bodies are counted and
    CRC'd in place, never accumulated."""

    def __init__(self, sock: socket.socket, size: int = 4 << 20):
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # unread bytes: buf[start:end]

    def _more(self) -> None:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        got = self.sock.recv_into(self.view[self.end:])
        if not got:
            raise ConnectionError(f"closed; unread {bytes(self.buf[self.start:self.end][:200])!r}")
        self.end += got

    def _line(self, sep: bytes = b"\r\n") -> bytes:
        while (i := self.buf.find(sep, self.start, self.end)) < 0:
            self._more()
        line = bytes(self.buf[self.start:i])
        self.start = i + len(sep)
        return line

    def head(self) -> tuple[bytes, dict[bytes, bytes]]:
        lines = self._line(b"\r\n\r\n").split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    def _consume(self, n: int, crc: int) -> int:
        while n:
            if self.start == self.end:
                self._more()
            k = min(n, self.end - self.start)
            crc = zlib.crc32(self.view[self.start:self.start + k], crc)
            self.start += k
            n -= k
        return crc

    def exact(self, n: int) -> bytes:
        while self.end - self.start < n:
            self._more()
        self.start += n
        return bytes(self.buf[self.start - n:self.start])

    def skip(self, n: int) -> None:
        self._consume(n, 0)

    def body(self, headers: dict[bytes, bytes]) -> tuple[int, int]:
        """(bytes, CRC-32) of a Content-Length or chunked body."""
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            return n, self._consume(n, 0)
        assert headers.get(b"transfer-encoding") == b"chunked", headers
        count = crc = 0
        while size := int(self._line().split(b";", 1)[0], 16):
            crc = self._consume(size, crc)
            count += size
            assert self._line() == b"", "chunk data not followed by CRLF"
        while self._line():  # trailer section
            pass
        return count, crc

    def read_to_eof(self) -> bytes:
        rest = bytes(self.buf[self.start:self.end])
        self.start = self.end = 0
        while data := self.sock.recv(1 << 16):
            rest += data
        return rest


def upload(server: Server, size: int, chunked: bool) -> dict[str, int]:
    """Sends `size` bytes (download pieces, reused as upload data) to mode=count; returns
    what the app counted and the CRC the client computed."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    head = b"POST /?mode=count HTTP/1.1\r\nHost: bulk.test\r\n" + framing + b"\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(head)
        crc, index, left = 0, 0, size
        while left:
            piece = download_piece(index, min(PIECE, left))
            if chunked:
                sock.sendall(b"%x\r\n" % len(piece))
            sock.sendall(piece)
            if chunked:
                sock.sendall(b"\r\n")
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
            index += 1
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        reader = BulkReader(sock, 1 << 16)
        status, headers = reader.head()
        assert status == b"HTTP/1.1 200 OK", status
        counted = json.loads(reader.exact(int(headers[b"content-length"])))
    return {"sent": size, "sent_crc32": crc, "bytes": counted["bytes"], "crc32": counted["crc32"]}


def download(server: Server, size: int, with_length: bool) -> tuple[int, int]:
    target = b"/?mode=download&size=%d&piece=%d" % (size, PIECE)
    if with_length:
        target += b"&length=1"
    with socket.create_connection((server.host, server.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: bulk.test\r\n\r\n")
        reader = BulkReader(sock)
        status, headers = reader.head()
        assert status == b"HTTP/1.1 200 OK", status
        assert (b"content-length" in headers) == with_length, headers
        return reader.body(headers)


@lru_cache(maxsize=None)
def download_crc(size: int) -> int:
    crc, index, left = 0, 0, size
    while left:
        piece = download_piece(index, min(PIECE, left))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
        index += 1
    return crc


@pytest.fixture(scope="module")
def bulk_server(servers: ServerFactory) -> Iterator[Server]:
    server = servers.start(APP)
    # Warm up: move data both ways so that every shared-memory slot the front end maps has
    # been touched and its allocator has its working set; the baseline is taken after.
    # (Slots are fixed: --slot-size x --channel-slots per direction and worker.)
    for chunked in (False, True):
        got = upload(server, WARM_UP, chunked)
        assert (got["bytes"], got["crc32"]) == (got["sent"], got["sent_crc32"])
        assert download(server, WARM_UP, not chunked) == (WARM_UP, download_crc(WARM_UP))
    yield server


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_2gib_upload_keeps_front_end_rss_bounded(bulk_server: Server, chunked: bool) -> None:
    with RssSampler(bulk_server.proc.pid) as rss:
        got = upload(bulk_server, GIB2, chunked)
    assert (got["bytes"], got["crc32"]) == (GIB2, got["sent_crc32"])
    rss.check()


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_2gib_download_keeps_front_end_rss_bounded(bulk_server: Server,
                                                   with_length: bool) -> None:
    expected = (GIB2, download_crc(GIB2))  # computed before sampling starts
    with RssSampler(bulk_server.proc.pid) as rss:
        got = download(bulk_server, GIB2, with_length)
    assert got == expected
    rss.check()


SLOW_READERS = 300


def test_clients_that_read_nothing_share_the_threads_response_budget(servers: ServerFactory) -> None:
    """300 clients each ask for a 64 MiB download and read nothing. What the workers send past
    the kernel's socket buffers waits in the front end's memory; with the full response
    window each (8 records of 64 KiB) that was 512 KiB a client, about 130 MiB here. The
    thread's streams share 256 records, 1 each once 256 are open (dispatch/streams.rs), so
    the front end grows by much less, and the server goes on answering."""
    server = servers.start(APP)
    with RssSampler(server.proc.pid) as rss:
        socks = []
        try:
            for _ in range(SLOW_READERS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(READ_TIMEOUT)
                sock.connect((server.host, server.port))
                sock.sendall(b"GET /?mode=download&size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 << 20))
                socks.append(sock)
            time.sleep(3.0)  # time enough for every worker to fill every window
            got = exchange_raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 200 "), got[:200]
        finally:
            for sock in socks:
                sock.close()
    peak = max(s["VmRSS"] for s in rss.samples)
    grown = peak - rss.baseline["VmRSS"]
    assert grown < 80 << 20, f"the front end grew by {grown >> 20} MiB"
