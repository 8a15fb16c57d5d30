"""HTTP/2 end to end: h2c by prior knowledge and h2 by ALPN, streams of one connection
spread over the workers, bodies both ways with hashes, a blocked handler that holds up no
other stream, GOAWAY on SIGTERM with the streams in flight finished, and each flood bounded
(connection closed with GOAWAY ENHANCE_YOUR_CALM, counted in the metrics, other connections
unaffected). Clients: httpx (http2=True), curl, and the h2 package's frames for the floods."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import hpack
import httpx
import pytest
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

from harness import HOST, Server, ServerFactory, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from h2_app import pattern  # noqa: E402

pytestmark = pytest.mark.uringapi_only

HANG_GUARD = 60.0  # seconds: a bound against hangs, never a speed claim
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 11


def _start(servers: ServerFactory, *extra: str, workers: int = 2) -> tuple[Server, int]:
    metrics = free_port()
    server = servers.start("h2_app:app", probe_path="/sleep?s=0", workers=workers,
                           extra_args=("--metrics-port", str(metrics), *extra))
    return server, metrics


@pytest.fixture(scope="module")
def h2_server(servers: ServerFactory) -> tuple[Server, int]:
    return _start(servers, "--timeout-body-read", "2")


def _client(server: Server) -> httpx.AsyncClient:
    # One connection: every request of the test is a stream on it.
    return httpx.AsyncClient(base_url=server.base_url, http1=False, http2=True, timeout=HANG_GUARD,
                             limits=httpx.Limits(max_connections=1))


def _metric(metrics_port: int, name: str, label: str) -> float:
    text = httpx.get(f"http://{HOST}:{metrics_port}/metrics", timeout=HANG_GUARD).text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{label}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prior_knowledge_with_curl_and_the_scope_says_http_2(h2_server: tuple[Server, int]) -> None:
    server, _ = h2_server
    if shutil.which("curl") is None:
        pytest.fail("curl is needed")
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
         f"{server.base_url}/sleep?s=0"],
        capture_output=True, text=True, timeout=HANG_GUARD, check=True).stdout
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["http_version"] == "2"
    # The same port still serves HTTP/1.1.
    r = httpx.get(f"{server.base_url}/sleep?s=0", timeout=HANG_GUARD)
    assert r.http_version == "HTTP/1.1" and r.json()["http_version"] == "1.1"


def test_100_streams_on_one_connection_spread_over_the_workers(
        h2_server: tuple[Server, int]) -> None:
    server, _ = h2_server

    async def run() -> list[httpx.Response]:
        async with _client(server) as client:
            return await asyncio.gather(*(client.get("/sleep?s=0.3") for _ in range(100)))

    began = time.monotonic()
    responses = asyncio.run(run())
    took = time.monotonic() - began
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in responses)
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) > 1, f"every stream ran on one worker: {pids}"
    # Every handler was asleep at one moment: the last to start did so before the first
    # to finish woke. One after another they would take 30 s; the issue asks for well
    # under 3 s, which is a bound on serialisation here, not a speed claim.
    last_start = max(r.json()["started"] for r in responses)
    first_end = min(r.json()["ended"] for r in responses)
    assert last_start < first_end, f"streams did not all run at once ({last_start - first_end:.3f} s apart)"
    assert took < 3.0, f"100 concurrent 0.3 s streams took {took:.2f} s"


def test_10_mib_upload_and_download_with_hashes(h2_server: tuple[Server, int]) -> None:
    server, _ = h2_server
    size = 10 * 1024 * 1024
    upload = os.urandom(size)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with _client(server) as client:
            up = await client.post("/upload", content=upload)
            down = await client.get(f"/download?n={size}")
            return up, down

    up, down = asyncio.run(run())
    assert up.status_code == 200 and up.http_version == "HTTP/2"
    assert up.json() == {"bytes": size, "sha256": hashlib.sha256(upload).hexdigest()}
    assert down.status_code == 200 and down.http_version == "HTTP/2"
    assert len(down.content) == size
    assert hashlib.sha256(down.content).digest() == hashlib.sha256(pattern(size)).digest()


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) << 10


def test_a_stream_whose_client_stops_reading_is_not_buffered(servers: ServerFactory) -> None:
    """A client asks for 512 MiB and never reads past its first flow-control window
    (65,535 bytes). The front end must not take the response in meanwhile (its RSS stays
    within 64 MiB of where it was: the worker's response window, 8 records, holds the app's
    send()), and the other requests to that (only) worker are answered."""
    server, _ = _start(servers, workers=1)
    before = _rss(server.proc.pid)
    sock = _raw(server.port)
    _send(sock, [HeadersFrame(1, _headers_block(f"/download?n={512 << 20}"),
                              flags=["END_HEADERS", "END_STREAM"]).serialize()])
    got = 0
    for frame in _frames(sock):
        if isinstance(frame, DataFrame):
            got += len(frame.data)
        if got >= 65535:
            break
    time.sleep(1.0)  # time enough to push hundreds of MiB, if nothing held the app back
    with httpx.Client(base_url=server.base_url, timeout=HANG_GUARD) as c:
        for _ in range(3):
            assert c.get("/sleep?s=0").status_code == 200
    grown = _rss(server.proc.pid) - before
    sock.close()
    assert grown < 64 << 20, f"the front end grew by {grown >> 20} MiB"


def test_streams_whose_client_reads_nothing_share_one_budget(servers: ServerFactory) -> None:
    """200 streams on one connection ask for 1 MiB each and the client reads nothing. What
    the workers send waits in the front end for the client's flow-control window: given the
    full response window each (8 records of 64 KiB), that was 100 MiB for this one
    connection. Its streams share 16 records, 1 each once 16 are open (h2/mod.rs), so the
    front end grows by far less; the server goes on answering other clients."""
    server, _ = _start(servers)
    before = _rss(server.proc.pid)
    sock = _raw(server.port)
    encoder = hpack.Encoder()
    streams = [HeadersFrame(2 * i + 1, encoder.encode([
        (":method", "GET"), (":scheme", "http"), (":path", f"/download?n={1 << 20}"),
        (":authority", HOST)]), flags=["END_HEADERS", "END_STREAM"]).serialize()
        for i in range(200)]
    _send(sock, streams)
    time.sleep(2.0)  # time enough for every stream's worker to fill its window
    grown = _rss(server.proc.pid) - before
    with httpx.Client(base_url=server.base_url, timeout=HANG_GUARD) as c:
        assert c.get("/sleep?s=0").status_code == 200
    sock.close()
    assert grown < 48 << 20, f"the front end grew by {grown >> 20} MiB"


def test_a_blocked_handler_holds_up_no_other_stream(h2_server: tuple[Server, int]) -> None:
    # Frame by frame: httpx's HTTP/2 client (httpcore) can hand a caller its response only
    # once the blocked stream's read returns, although the frames came at once (README,
    # Known limits; tests/e2e/h2trace.py shows it frame by frame).
    server, _ = h2_server
    sock = _raw(server.port)
    _send(sock, [HeadersFrame(1, _headers_block("/block?s=4"),
                              flags=["END_HEADERS", "END_STREAM"]).serialize()])
    time.sleep(1.0)  # the blocked worker's silence passes --stall-timeout
    others = [3 + 2 * i for i in range(10)]
    _send(sock, [HeadersFrame(sid, _headers_block("/sleep?s=0"),
                              flags=["END_HEADERS", "END_STREAM"]).serialize() for sid in others])
    order: list[int] = []
    bodies: dict[int, bytes] = {}
    for frame in _frames(sock):
        if isinstance(frame, DataFrame):
            bodies[frame.stream_id] = bodies.get(frame.stream_id, b"") + frame.data
        if "END_STREAM" in frame.flags:
            order.append(frame.stream_id)
        if len(order) == 11:
            break
    sock.close()
    assert sorted(order) == [1, *others]
    assert order[-1] == 1, f"a stream ended after the blocked one: {order}"
    pids = {json.loads(bodies[sid])["pid"] for sid in others}
    assert json.loads(bodies[1])["pid"] not in pids


def test_sigterm_sends_goaway_and_finishes_the_streams_in_flight(servers: ServerFactory) -> None:
    server, _ = _start(servers)
    sock = _raw(server.port)
    streams = [2 * i + 1 for i in range(5)]
    _send(sock, [HeadersFrame(sid, _headers_block("/sleep?s=1"),
                              flags=["END_HEADERS", "END_STREAM"]).serialize()
                 for sid in streams])
    time.sleep(0.4)
    server.proc.send_signal(signal.SIGTERM)
    decoder = hpack.Decoder()
    statuses: dict[int, str] = {}
    ended: set[int] = set()
    goaways: list[int] = []
    for frame in _frames(sock):
        if isinstance(frame, HeadersFrame):
            statuses[frame.stream_id] = dict(decoder.decode(frame.data))[":status"]
        if isinstance(frame, GoAwayFrame):
            goaways.append(frame.error_code)
        if "END_STREAM" in frame.flags:
            ended.add(frame.stream_id)
    sock.close()
    assert goaways and set(goaways) == {0}, goaways
    assert ended == set(streams)
    assert all(statuses[s] == "200" for s in streams), statuses
    assert server.wait_exit(HANG_GUARD) == 0


def test_a_client_that_never_answers_ping_is_still_closed_once_idle(
        servers: ServerFactory) -> None:
    """An idle connection is closed with GOAWAY after --timeout-keep-alive; h2's graceful
    close sends its final GOAWAY, and closes, only once the client has answered a PING. A
    client that never answers (this raw one) kept the connection open for as long as the
    server ran, and held a drain for the whole graceful timeout. Now, with no stream left,
    the final GOAWAY goes out without the answer (2 s later) and the connection closes."""
    server, _ = _start(servers, "--timeout-keep-alive", "1", workers=1)
    sock = _raw(server.port)
    sock.settimeout(20)  # against a hang: well past the 1 s idle timeout plus the 2 s wait
    _send(sock, [HeadersFrame(1, _headers_block("/sleep?s=0"),
                              flags=["END_HEADERS", "END_STREAM"]).serialize()])
    frames = list(_frames(sock))  # until the connection ends (or the 20 s guard)
    sock.close()
    assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in frames), frames
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and all(f.error_code == 0 for f in goaways), goaways
    assert goaways[-1].last_stream_id == 1, goaways
    assert server.proc.poll() is None


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=HANG_GUARD)
    sock.sendall(PREFACE + SettingsFrame(0).serialize())
    return sock


def _frames(sock: socket.socket) -> Iterator[Frame]:
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


def _goaway_code(sock: socket.socket) -> int | None:
    """Reads frames until a GOAWAY (its error code) or the end of the connection (None).
    After the GOAWAY, reads on to the end of the connection: a stream reset after it would
    be the server cancelling what it already gave up (none may come)."""
    code = None
    for frame in _frames(sock):
        if code is None and isinstance(frame, GoAwayFrame):
            code = frame.error_code
        elif code is not None:
            assert not isinstance(frame, RstStreamFrame), f"RST_STREAM after GOAWAY: {frame}"
    return code


def _send(sock: socket.socket, frames: list[bytes]) -> None:
    try:
        sock.sendall(b"".join(frames))
    except OSError:
        pass  # the server may close first; what it said is read next


def _headers_block(path: str = "/sleep?s=0", extra: list[tuple[str, str]] | None = None) -> bytes:
    return hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", path),
                                   (":authority", HOST), *(extra or [])])


def _flood_ping() -> list[bytes]:
    return [PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(400)]


def _flood_settings() -> list[bytes]:
    return [SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()
            for _ in range(200)]


def _flood_rapid_reset() -> list[bytes]:
    frames = []
    for i in range(600):
        sid = 2 * i + 1
        h = HeadersFrame(sid, _headers_block(), flags=["END_HEADERS", "END_STREAM"])
        frames += [h.serialize(), RstStreamFrame(sid, error_code=8).serialize()]
    return frames


def _flood_continuation() -> list[bytes]:
    block = _headers_block(extra=[(f"x-h{i}", "v" * 20) for i in range(400)])
    first = HeadersFrame(1, block[:10], flags=["END_STREAM"])
    rest = [block[i:i + 10] for i in range(10, len(block), 10)]
    return [first.serialize(), *(ContinuationFrame(1, piece).serialize() for piece in rest)]


def _flood_hpack_bomb() -> list[bytes]:
    # One 4000-byte field, then the same field by its table index a thousand times: ~5 KB
    # on the wire, 4 MB decoded.
    block = _headers_block(extra=[("x-bomb", "a" * 4000)] * 1000)
    return [HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize()]


FLOODS = {
    "ping_flood": _flood_ping,
    "settings_flood": _flood_settings,
    "rapid_reset": _flood_rapid_reset,
    "continuation_flood": _flood_continuation,
    "header_list_size": _flood_hpack_bomb,
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_each_flood_is_cut_off_with_enhance_your_calm_and_counted(
        h2_server: tuple[Server, int], kind: str) -> None:
    server, metrics = h2_server
    before = _metric(metrics, "uringapi_h2_defence_total", f'kind="{kind}"')
    bystander = httpx.Client(base_url=server.base_url, http1=False, http2=True,
                             timeout=HANG_GUARD)
    assert bystander.get("/sleep?s=0").status_code == 200
    with _raw(server.port) as sock:
        _send(sock, FLOODS[kind]())
        assert _goaway_code(sock) == ENHANCE_YOUR_CALM
    assert _metric(metrics, "uringapi_h2_defence_total", f'kind="{kind}"') == before + 1
    # Another connection, opened before the flood, is unaffected.
    r = bystander.get("/sleep?s=0")
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    bystander.close()


def test_a_clients_protocol_errors_write_no_log_lines_at_info(
        h2_server: tuple[Server, int]) -> None:
    """What a client gets wrong is logged at debug, as over HTTP/1.1 (floods excepted): a
    line at info per bad connection, or per bad frame, is one any client can make us write.
    A PING ack the server never asked for is ignored, as RFC 9113 §6.7 allows, but the h2
    crate warned about each (2,000 lines here, one per 17 bytes sent); DATA on a stream never
    opened ends the connection with GOAWAY PROTOCOL_ERROR, and its line was at info."""
    server, _ = h2_server
    before = len(server.stderr().splitlines())
    acks = [PingFrame(0, opaque_data=i.to_bytes(8, "big"), flags=["ACK"]).serialize() for i in range(2000)]
    with _raw(server.port) as sock:
        _send(sock, [*acks, HeadersFrame(1, _headers_block(), flags=["END_HEADERS", "END_STREAM"]).serialize()])
        # The answer comes after every ack was read (one connection's frames, in order).
        answer = next(f for f in _frames(sock) if isinstance(f, HeadersFrame) and f.stream_id == 1)
        assert hpack.Decoder().decode(answer.data)[0] == (":status", "200")
    for _ in range(3):
        with _raw(server.port) as sock:
            _send(sock, [DataFrame(5, b"never opened").serialize()])
            assert _goaway_code(sock) == 1  # PROTOCOL_ERROR
    # Logging is synchronous in the front end: each connection's lines were written before
    # its GOAWAY went out.
    grown = server.stderr().splitlines()[before:]
    assert not [line for line in grown if "PING" in line or "GOAWAY" in line], grown[:5]
    assert len(grown) < 10, grown[:20]


def test_expect_100_continue_is_answered_before_the_body(h2_server: tuple[Server, int]) -> None:
    """RFC 9110 §10.1.1 over HTTP/2: a request with `expect: 100-continue` and a body gets
    an informational HEADERS (:status 100) on its stream before the client sends the body
    (as over HTTP/1.1), then the final answer once the body came."""
    server, _ = h2_server
    body = os.urandom(3000)
    block = hpack.Encoder().encode([
        (":method", "POST"), (":scheme", "http"), (":path", "/upload"), (":authority", HOST),
        ("expect", "100-continue"), ("content-length", str(len(body)))])
    decoder = hpack.Decoder()
    with _raw(server.port) as sock:
        # A bound against hangs: without the 100 the server waits for the body for ever.
        sock.settimeout(10.0)
        _send(sock, [HeadersFrame(1, block, flags=["END_HEADERS"]).serialize()])
        first = None
        for frame in _frames(sock):
            if isinstance(frame, HeadersFrame) and frame.stream_id == 1:
                first = frame
                break
        assert first is not None, "no HEADERS on the stream before the body was sent"
        assert dict(decoder.decode(first.data))[":status"] == "100"
        assert "END_STREAM" not in first.flags
        _send(sock, [DataFrame(1, body, flags=["END_STREAM"]).serialize()])
        status, data = None, b""
        for frame in _frames(sock):
            if frame.stream_id != 1:
                continue
            if isinstance(frame, HeadersFrame):
                status = dict(decoder.decode(frame.data))[":status"]
            elif isinstance(frame, DataFrame):
                data += frame.data
            if "END_STREAM" in frame.flags:
                break
    assert status == "200"
    assert json.loads(data) == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_an_app_that_answers_before_asking_for_an_expected_body(
        h2_server: tuple[Server, int]) -> None:
    """`expect: 100-continue`, and the app answers before it asks for the body: no 100 goes
    out, and its asking later (the worker's late invitation) does not cut the response."""
    server, _ = h2_server
    block = hpack.Encoder().encode([
        (":method", "POST"), (":scheme", "http"), (":path", "/late-read"), (":authority", HOST),
        ("expect", "100-continue"), ("content-length", "10")])
    decoder = hpack.Decoder()
    statuses, data, ended = [], b"", False
    with _raw(server.port) as sock:
        _send(sock, [HeadersFrame(1, block, flags=["END_HEADERS"]).serialize()])
        for frame in _frames(sock):
            if frame.stream_id != 1:
                continue
            assert not isinstance(frame, RstStreamFrame), f"stream reset before its end: {frame}"
            if isinstance(frame, HeadersFrame):
                statuses.append(dict(decoder.decode(frame.data))[":status"])
            elif isinstance(frame, DataFrame):
                data += frame.data
            if "END_STREAM" in frame.flags:
                ended = True
                break
    assert statuses == ["200"] and ended
    assert data == b"early done"


def test_a_window_kept_shut_closes_the_connection(h2_server: tuple[Server, int]) -> None:
    """Ten streams wait on a shut window: the connection closes once, counted once, with one
    log line (each stream's wait ran out, and each wrote its own line: one per stream)."""
    server, metrics = h2_server
    before = _metric(metrics, "uringapi_h2_defence_total", 'kind="zero_window"')
    lines_before = len(server.stderr().splitlines())
    with _raw(server.port) as sock:
        settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        encoder = hpack.Encoder()
        streams = [HeadersFrame(2 * i + 1, encoder.encode([
            (":method", "GET"), (":scheme", "http"), (":path", "/download?n=100000"),
            (":authority", HOST)]), flags=["END_HEADERS", "END_STREAM"]).serialize()
            for i in range(10)]
        _send(sock, [settings.serialize(), *streams])
        assert _goaway_code(sock) == ENHANCE_YOUR_CALM
    assert _metric(metrics, "uringapi_h2_defence_total", 'kind="zero_window"') == before + 1
    grown = server.stderr().splitlines()[lines_before:]
    assert len([line for line in grown if "window shut" in line]) == 1, grown[:12]


def test_alpn_h2_on_the_tls_port(servers: ServerFactory, tmp_path: Path) -> None:
    if shutil.which("openssl") is None or shutil.which("curl") is None:
        pytest.fail("openssl and curl are needed (the Makefile installs openssl)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"],
                   cwd=tmp_path, check=True, capture_output=True)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server = servers.start("h2_app:app", probe_path=None, workers=2,
                           extra_args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)))
    url = f"https://{HOST}:{server.port}"
    deadline = time.monotonic() + HANG_GUARD
    while True:
        done = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cert), "-w",
                               "\n%{http_version}", f"{url}/sleep?s=0"],
                              capture_output=True, text=True, timeout=HANG_GUARD)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    body, version = done.stdout.rsplit("\n", 1)
    assert version == "2", done.stderr
    assert json.loads(body)["http_version"] == "2"
    size = 3 * 1024 * 1024 + 7
    payload = os.urandom(size)
    with httpx.Client(http1=False, http2=True, verify=ssl.create_default_context(cafile=str(cert)),
                      timeout=HANG_GUARD) as client:
        up = client.post(f"{url}/upload", content=payload)
        down = client.get(f"{url}/download?n={size}")
    assert up.http_version == "HTTP/2"
    assert up.json() == {"bytes": size, "sha256": hashlib.sha256(payload).hexdigest()}
    assert down.content == pattern(size)
    # An HTTP/1.1-only client still gets HTTP/1.1 on the same port.
    r = httpx.get(f"{url}/sleep?s=0", verify=ssl.create_default_context(cafile=str(cert)),
                  timeout=HANG_GUARD)
    assert r.http_version == "HTTP/1.1" and r.json()["http_version"] == "1.1"


def test_health_path_request_id_host_and_cookies_over_http2(servers: ServerFactory) -> None:
    server, _ = _start(servers, "--health-path", "/healthz", "--request-id")
    with httpx.Client(base_url=server.base_url, http1=False, http2=True,
                      timeout=HANG_GUARD) as client:
        health = client.get("/healthz")
        assert (health.status_code, health.text, health.http_version) == (200, "ok\n", "HTTP/2")
        assert client.post("/healthz").status_code == 405
        # Two cookie fields (as HPACK may split them) reach the app as one (RFC 9113 §8.2.3).
        r = client.get("/headers", headers=[("cookie", "a=1"), ("cookie", "b=2")])
    seen = dict((k, v) for k, v in r.json()["headers"])
    assert seen["host"] == f"{HOST}:{server.port}"
    assert seen["cookie"] == "a=1; b=2"
    assert len(seen["x-request-id"]) == 32


def test_http_flag_restricts_the_protocols(servers: ServerFactory) -> None:
    only1, _ = _start(servers, "--http", "1")
    only2 = servers.start("h2_app:app", probe_path=None, workers=1, extra_args=("--http", "2"))

    def curl(server: Server, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", *flags, "-w", "\n%{http_version}",
                               f"{server.base_url}/sleep?s=0"],
                              capture_output=True, text=True, timeout=HANG_GUARD)

    assert curl(only1).stdout.endswith("\n1.1")
    # --http 1: the preface is not taken for HTTP/2 (an HTTP/1.1 error, then close).
    assert not curl(only1, "--http2-prior-knowledge").stdout.endswith("\n2")
    deadline = time.monotonic() + HANG_GUARD
    while (done := curl(only2, "--http2-prior-knowledge")).returncode != 0:
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.2)
    assert done.stdout.endswith("\n2")
    # --http 2: an HTTP/1.1 request gets no HTTP/1.1 answer.
    assert not curl(only2).stdout.endswith("\n1.1")
