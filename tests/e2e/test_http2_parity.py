"""HTTP/2 streams get what HTTP/1.1 requests get: --static-mount files (same bytes and fields,
304, ranges, errors, the body under flow control), --health-path, --proxy-headers, the
front end's own answers (error bodies, Server/Date/--header fields), the request body's
timeouts and limits, and revocable dispatch (a stream queued on a stalled worker is taken
back and answered by the other worker). Each is checked against what an HTTP/1.1 client of
the same server sees, or against the frames an HTTP/2 client receives."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import hpack
import httpx
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame

import h2raw
from harness import HOST, Server, ServerFactory

pytestmark = pytest.mark.uringapi_only

HANG_GUARD = 30.0  # seconds: a bound against hangs, never a speed claim
SMALL = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes: the cached path
BIG = os.urandom(3 * 1024 * 1024 + 11)  # past every default window: the flow-controlled path
SAME_FIELDS = ("content-type", "content-length", "etag", "last-modified", "accept-ranges",
               "content-range", "allow", "server", "x-extra")


@pytest.fixture(scope="module")
def parity(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    public = tmp_path_factory.mktemp("h2static")
    (public / "small.bin").write_bytes(SMALL)
    (public / "big.bin").write_bytes(BIG)
    (public / "site.css").write_text("body { color: red }\n")
    return servers.start("h2_app:app", probe_path="/sleep?s=0", workers=2, extra_args=(
        "--static-mount", f"/static={public}", "--health-path", "/healthz",
        "--header", "x-extra: 1", "--timeout-body-read", "1", "--limit-request-body", "100000",
        "--limit-request-line", "300", "--limit-request-fields", "20", "--limit-request-field-size", "500"))


def _both(server: Server, method: str, path: str,
          headers: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    """The same request over HTTP/1.1 and over HTTP/2."""
    with httpx.Client(base_url=server.base_url, timeout=HANG_GUARD) as one, \
            httpx.Client(base_url=server.base_url, http1=False, http2=True, timeout=HANG_GUARD) as two:
        r1 = one.request(method, path, headers=headers)
        r2 = two.request(method, path, headers=headers)
    assert (r1.http_version, r2.http_version) == ("HTTP/1.1", "HTTP/2")
    return r1, r2


def _same(r1: httpx.Response, r2: httpx.Response) -> None:
    assert r2.status_code == r1.status_code
    assert r2.content == r1.content
    for name in SAME_FIELDS:
        assert r2.headers.get(name) == r1.headers.get(name), name
    assert ("date" in r1.headers) == ("date" in r2.headers)


@pytest.mark.parametrize("name,data", [("small.bin", SMALL), ("big.bin", BIG)])
def test_a_static_file_over_http2_is_the_http1_answer(parity: Server, name: str, data: bytes) -> None:
    r1, r2 = _both(parity, "GET", f"/static/{name}")
    _same(r1, r2)
    assert r2.status_code == 200
    assert hashlib.sha256(r2.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert r2.headers["content-length"] == str(len(data))
    assert r2.headers["x-extra"] == "1" and r2.headers["server"] == "uringapi"
    css1, css2 = _both(parity, "GET", "/static/site.css")
    _same(css1, css2)
    assert css2.headers["content-type"] == "text/css; charset=utf-8"


def test_validators_ranges_and_refusals_over_http2(parity: Server) -> None:
    first = httpx.get(f"{parity.base_url}/static/big.bin", timeout=HANG_GUARD)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    cases = [
        ("GET", "/static/big.bin", {"if-none-match": etag}, 304),
        ("GET", "/static/big.bin", {"if-modified-since": modified}, 304),
        ("GET", "/static/big.bin", {"range": "bytes=10-19"}, 206),
        ("GET", "/static/big.bin", {"range": "bytes=-4"}, 206),
        ("GET", "/static/big.bin", {"range": f"bytes=100-{len(BIG) + 5}"}, 206),
        ("GET", "/static/big.bin", {"range": f"bytes={len(BIG)}-"}, 416),
        ("GET", "/static/big.bin", {"range": "bytes=0-9", "if-range": '"stale"'}, 200),
        ("GET", "/static/missing.bin", None, 404),
        ("GET", "/static/../h2_app.py", None, 404),
        ("POST", "/static/big.bin", None, 405),
        ("HEAD", "/static/big.bin", None, 200),
        ("GET", "/healthz", None, 200),
        ("POST", "/healthz", None, 405),
    ]
    for method, path, headers, status in cases:
        r1, r2 = _both(parity, method, path, headers)
        assert r2.status_code == status, (method, path, headers)
        _same(r1, r2)
    part = httpx.Client(http1=False, http2=True, timeout=HANG_GUARD).get(
        f"{parity.base_url}/static/big.bin", headers={"range": "bytes=100-"})
    assert part.status_code == 206 and part.content == BIG[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(BIG) - 1}/{len(BIG)}"


def test_a_static_file_waits_for_the_client_window(parity: Server) -> None:
    # A client that opens with a 1,000-byte stream window gets at most that much DATA on
    # the stream until it returns window, then the rest: the whole file, byte-identical.
    sock = h2raw.connect(HOST, parity.port, HANG_GUARD, {SettingsFrame.INITIAL_WINDOW_SIZE: 1000})
    enc = hpack.Encoder()
    h2raw.send(sock, [HeadersFrame(1, h2raw.headers_block(enc, "/static/small.bin", HOST),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize()])
    got = b""
    opened = False
    for frame in h2raw.frames(sock):
        if isinstance(frame, DataFrame) and frame.stream_id == 1:
            got += frame.data
            if not opened:
                assert len(got) <= 1000, f"{len(got)} bytes sent past a 1,000-byte window"
                if len(got) == 1000:
                    opened = True
                    from hyperframe.frame import WindowUpdateFrame
                    h2raw.send(sock, [WindowUpdateFrame(1, window_increment=len(SMALL)).serialize()])
            if "END_STREAM" in frame.flags:
                break
    sock.close()
    assert opened and got == SMALL


@pytest.mark.parametrize("status", [204, 205, 304])
def test_a_body_on_a_204_205_or_304_is_dropped_over_http2_as_over_http1(parity: Server,
                                                                        status: int) -> None:
    # The app sends content-length 9 and 9 bytes with a status that has no content (RFC 9110
    # §6.4.1, §15.3.6). After a 204 or 304 a DATA frame would be a protocol error to the
    # client (RFC 9113 §8.1.1): the HEADERS frame ends the stream, as the HTTP/1.1 answer
    # ends after its head; a 304 keeps its content-length (that of the representation), a
    # 204 has none (§8.6), a 205 says 0 (a client cannot tell from the status).
    r1, r2 = _both(parity, "GET", f"/bodiless?status={status}")
    assert (r1.status_code, r1.content) == (status, b"")
    _same(r1, r2)
    assert r2.headers.get("content-length") == {204: None, 205: "0", 304: "9"}[status]
    assert r2.headers["etag"] == '"v1"'
    sock = h2raw.connect(HOST, parity.port, HANG_GUARD)
    enc, dec = hpack.Encoder(), hpack.Decoder()
    h2raw.send(sock, [HeadersFrame(1, h2raw.headers_block(enc, f"/bodiless?status={status}", HOST),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize()])
    on_stream = []
    for frame in h2raw.frames(sock):
        if frame.stream_id == 1:
            on_stream.append(frame)
            if isinstance(frame, HeadersFrame):
                assert dict(dec.decode(frame.data))[":status"] == str(status)
            if "END_STREAM" in frame.flags or isinstance(frame, RstStreamFrame):
                break
    sock.close()
    assert [type(f).__name__ for f in on_stream] == ["HeadersFrame"]
    assert "END_STREAM" in on_stream[0].flags


def test_two_different_content_lengths_are_refused_over_http2_as_over_http1(parity: Server) -> None:
    r1, r2 = _both(parity, "GET", "/two-lengths")
    assert r1.status_code == 502
    _same(r1, r2)
    # Both answers are logged with the reason (the HTTP/1.1 one and the HTTP/2 one).
    assert parity.stderr().count("content-length given twice, as 3 and 4") >= 2


def _status_of(server: Server, extra: list[tuple[str, str]]) -> tuple[str, bytes]:
    """The :status and body of one GET /headers stream with `extra` fields (frame level)."""
    sock = h2raw.connect(HOST, server.port, HANG_GUARD)
    enc, dec = hpack.Encoder(), hpack.Decoder()
    h2raw.send(sock, [HeadersFrame(1, h2raw.headers_block(enc, "/headers", "a.example", extra=extra),
                                   flags=["END_HEADERS", "END_STREAM"]).serialize()])
    status, body = "", b""
    for frame in h2raw.frames(sock):
        if frame.stream_id == 1 and isinstance(frame, HeadersFrame):
            status = dict(dec.decode(frame.data))[":status"]
        if frame.stream_id == 1 and isinstance(frame, DataFrame):
            body += frame.data
        if frame.stream_id == 1 and ("END_STREAM" in frame.flags or isinstance(frame, RstStreamFrame)):
            break
    sock.close()
    return status, body


def test_a_stream_that_names_two_hosts_is_a_400_as_over_http1(parity: Server) -> None:
    # The app would see the Host field while a proxy in front routed by :authority (RFC 9113
    # §8.3.1: a Host that differs from :authority is malformed); Host twice is a 400 over
    # HTTP/1.1 too. A Host equal to :authority is fine, and so is :authority alone.
    for extra, want in [([("host", "b.example")], "400"), ([("host", "a.example")], "200"),
                        ([], "200"), ([("host", "a.example"), ("host", "a.example")], "400")]:
        status, body = _status_of(parity, extra)
        assert status == want, (extra, status, body)
        if want == "200":
            assert ["host", "a.example"] in json.loads(body)["headers"]
    with socket.create_connection((HOST, parity.port), timeout=HANG_GUARD) as c:
        c.sendall(b"GET /headers HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 400 ")


def test_proxy_headers_set_client_and_scheme_only_for_a_trusted_peer(parity: Server) -> None:
    # --forwarded-allow-ips is 127.0.0.1 by default (as uvicorn): a client on 127.0.0.1 is a
    # trusted proxy, one on 127.0.0.2 is not.
    fields = {"x-forwarded-for": "203.0.113.9, 127.0.0.1", "x-forwarded-proto": "https"}
    seen = {}
    for source in ("127.0.0.1", "127.0.0.2"):
        transport = httpx.HTTPTransport(http1=False, http2=True, local_address=source)
        with httpx.Client(transport=transport, base_url=parity.base_url, timeout=HANG_GUARD) as c:
            r = c.get("/scope", headers=fields)
        assert r.http_version == "HTTP/2"
        seen[source] = r.json()
    assert seen["127.0.0.1"]["client"] == ["203.0.113.9", 0]
    assert seen["127.0.0.1"]["scheme"] == "https"
    assert seen["127.0.0.2"]["client"][0] == "127.0.0.2"
    assert seen["127.0.0.2"]["scheme"] == "http"
    # The same over HTTP/1.1, for comparison.
    r = httpx.get(f"{parity.base_url}/scope", headers=fields, timeout=HANG_GUARD)
    assert r.json()["client"] == ["203.0.113.9", 0] and r.json()["scheme"] == "https"


def test_the_front_ends_answers_and_fields_match_http1(parity: Server) -> None:
    # An app response: Server, Date and --header added as over HTTP/1.1.
    r1, r2 = _both(parity, "GET", "/sleep?s=0")
    for name in ("server", "x-extra", "content-type"):
        assert r2.headers.get(name) == r1.headers.get(name), name
    assert "date" in r2.headers
    # A body past --limit-request-body (no content-length announced it): 413 with the
    # HTTP/1.1 error body. Frame by frame, as httpx gives up on a stream answered early.
    sock = h2raw.connect(HOST, parity.port, HANG_GUARD)
    dec, enc = hpack.Decoder(), hpack.Encoder()
    body = [DataFrame(1, b"x" * 16384).serialize() for _ in range(12)]  # 196,608 bytes
    h2raw.send(sock, [HeadersFrame(1, h2raw.headers_block(enc, "/upload", HOST, "POST"),
                                   flags=["END_HEADERS"]).serialize(), *body,
                      DataFrame(1, b"", flags=["END_STREAM"]).serialize()])
    fields: dict[str, str] = {}
    got = b""
    for frame in h2raw.frames(sock):
        if isinstance(frame, HeadersFrame) and frame.stream_id == 1:
            fields = dict(dec.decode(frame.data))
        if isinstance(frame, DataFrame) and frame.stream_id == 1:
            got += frame.data
        if "END_STREAM" in frame.flags:
            break
    sock.close()
    assert fields[":status"] == "413"
    assert fields["content-type"] == "text/plain; charset=utf-8"
    assert got == b"413 Payload Too Large\n"


def test_head_limits_apply_to_a_stream_as_to_its_http1_head(parity: Server) -> None:
    many = {f"x-f{i}": "v" for i in range(25)}
    cases = [
        ("/sleep?s=0&pad=" + "a" * 300, None, 414),
        ("/sleep?s=0", many, 431),
        ("/sleep?s=0", {"x-long": "v" * 600}, 431),
        ("/sleep?s=0&pad=" + "a" * 200, {f"x-f{i}": "v" * 400 for i in range(10)}, 200),
    ]
    for path, headers, status in cases:
        r1, r2 = _both(parity, "GET", path, headers)
        assert (r1.status_code, r2.status_code) == (status, status), (path[:40], headers and len(headers))
        if status != 200:
            assert r2.content == r1.content


def test_a_request_body_that_stops_coming_gets_408(parity: Server) -> None:
    # HEADERS without END_STREAM, then no DATA: after --timeout-body-read (1 s) the stream
    # is answered 408, as an HTTP/1.1 request whose body stalls.
    sock = h2raw.connect(HOST, parity.port, HANG_GUARD)
    dec, enc = hpack.Decoder(), hpack.Encoder()
    block = h2raw.headers_block(enc, "/upload", HOST, "POST", [("content-length", "10")])
    h2raw.send(sock, [HeadersFrame(1, block, flags=["END_HEADERS"]).serialize(),
                      DataFrame(1, b"12345").serialize()])
    status = None
    for frame in h2raw.frames(sock):
        if isinstance(frame, HeadersFrame) and frame.stream_id == 1:
            status = dict(dec.decode(frame.data))[":status"]
            break
        assert not isinstance(frame, RstStreamFrame), frame
    sock.close()
    assert status == "408"


def _events(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, pid, *rest = line.split()
        out.append((event, int(pid), rest[0] if rest else "-"))
    return out


def _wait_event(path: Path, event: str, tag: str) -> int:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        for e, pid, t in _events(path):
            if e == event and t == tag:
                return pid
        time.sleep(0.005)
    raise AssertionError(f"{event} {tag} never logged")


RUNS = 4
FAST = 8


def test_streams_queued_on_a_stalled_worker_are_answered_by_the_other(
        servers: ServerFactory, tmp_path: Path) -> None:
    # Two workers. A stream blocks one worker's loop (time.sleep); at once 8 fast streams
    # follow on the same connection. Dispatch is by fewest requests in flight, so some land
    # in the blocked worker's ring; at --stall-timeout they are taken back and sent to the
    # other worker. Each fast stream must end before the blocked one (without revocation
    # those queued behind the block end after it), be answered by the other worker, and run
    # exactly once.
    event_log = tmp_path / "events.log"
    server = servers.start("ops_app:app", workers=2, threads=1, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(event_log)},
                           extra_args=("--stall-timeout", "0.1"))
    fast_tags: list[str] = []
    for run in range(RUNS):
        sock = h2raw.connect(HOST, server.port, HANG_GUARD)
        enc, dec = hpack.Encoder(), hpack.Decoder()
        h2raw.send(sock, [HeadersFrame(1, h2raw.headers_block(enc, f"/block?s=2&tag=b{run}", HOST),
                                       flags=["END_HEADERS", "END_STREAM"]).serialize()])
        blocked = _wait_event(event_log, "block-start", f"b{run}")
        tags = {3 + 2 * k: f"f{run}-{k}" for k in range(FAST)}
        fast_tags += tags.values()
        h2raw.send(sock, [HeadersFrame(sid, h2raw.headers_block(enc, f"/pid?s=0.02&tag={tag}", HOST),
                                       flags=["END_HEADERS", "END_STREAM"]).serialize()
                          for sid, tag in tags.items()])
        order: list[int] = []
        bodies: dict[int, bytes] = {}
        statuses: dict[int, str] = {}
        for frame in h2raw.frames(sock):
            if isinstance(frame, HeadersFrame):
                statuses[frame.stream_id] = dict(dec.decode(frame.data))[":status"]
            if isinstance(frame, DataFrame):
                bodies[frame.stream_id] = bodies.get(frame.stream_id, b"") + frame.data
            if "END_STREAM" in frame.flags:
                order.append(frame.stream_id)
            if len(order) == FAST + 1:
                break
        sock.close()
        assert sorted(order) == [1, *tags], order
        assert order[-1] == 1, f"run {run}: a fast stream ended after the blocked one: {order}"
        for sid in tags:
            assert statuses[sid] == "200", (sid, statuses[sid], bodies.get(sid))
            assert json.loads(bodies[sid])["pid"] != blocked, f"run {run}: stream {sid} ran on the blocked worker"
    # One more request per worker, so that each blocked worker has drained (and refused)
    # the records it was sent before they were taken back.
    with httpx.Client(base_url=server.base_url, http1=False, http2=True, timeout=HANG_GUARD) as c:
        assert all(c.get(f"/pid?s=0.3&tag=end{k}").status_code == 200 for k in range(2))
    starts: dict[str, list[int]] = {}
    for e, pid, tag in _events(event_log):
        if e == "pid-start" and tag.startswith("f"):
            starts.setdefault(tag, []).append(pid)
    twice = {tag: pids for tag, pids in starts.items() if len(pids) != 1}
    assert not twice, f"requests that ran more than once: {twice}"
    assert sorted(starts) == sorted(fast_tags)
    revoked = sum(int(line.split("revoked=")[1].split()[0])
                  for line in server.stderr().splitlines() if "took back requests" in line)
    assert revoked > 0, "no stream was ever queued on the blocked worker: the test proved nothing"
