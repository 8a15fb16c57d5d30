"""Native routes: --static-mount files and --health-path, answered by the front end without
a Python worker (ETag/Last-Modified, 304, Range, traversal refused)."""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

import rawhttp
from harness import Server

pytestmark = pytest.mark.uringapi_only

CONTENT = bytes(range(256)) * 40 + b"tail"  # 10244 bytes
# Several sendfile calls' worth (1 MiB each), not page-aligned, no byte like its neighbour.
LARGE = random.Random(7).randbytes(3 * 1024 * 1024 + 5)


@pytest.fixture(scope="module")
def native(servers, tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("native")
    public = root / "public"
    (public / "css").mkdir(parents=True)
    (public / "data.bin").write_bytes(CONTENT)
    (public / "large.bin").write_bytes(LARGE)
    (public / "css" / "site.css").write_text("body { color: red }\n")
    (public / "changing.txt").write_text("first\n")
    (root / "secret.txt").write_text("do not serve\n")
    os.symlink(root / "secret.txt", public / "escape")
    os.mkfifo(public / "pipe")  # opening it for reading waits for a writer, unless O_NONBLOCK
    server = servers.start("fastapi_app:app", probe_path="/json", extra_args=(
        "--static-mount", f"/static={public}", "--health-path", "/healthz"))
    server.public = public
    return server


def get(server: Server, target: str, headers=None, method: str = "GET") -> rawhttp.Response:
    with rawhttp.Connection(server.host, server.port) as c:
        return c.request(method, target, headers)


def test_file_with_validators_and_type(native: Server) -> None:
    r = get(native, "/static/data.bin")
    assert r.status == 200
    assert r.body == CONTENT
    assert r.header("content-length") == str(len(CONTENT))
    assert r.header("content-type") == "application/octet-stream"
    assert r.header("etag").startswith('"') and r.header("last-modified").endswith("GMT")
    assert r.header("accept-ranges") == "bytes"
    css = get(native, "/static/css/site.css")
    assert (css.status, css.body) == (200, b"body { color: red }\n")
    assert css.header("content-type") == "text/css; charset=utf-8"


def test_conditional_requests_get_304(native: Server) -> None:
    first = get(native, "/static/data.bin")
    etag, modified = first.header("etag"), first.header("last-modified")
    by_etag = get(native, "/static/data.bin", [("If-None-Match", etag)])
    assert (by_etag.status, by_etag.body) == (304, b"")
    assert by_etag.header("etag") == etag
    by_date = get(native, "/static/data.bin", [("If-Modified-Since", modified)])
    assert by_date.status == 304
    changed = get(native, "/static/data.bin", [("If-None-Match", '"other"')])
    assert changed.status == 200 and changed.body == CONTENT


def test_ranges(native: Server) -> None:
    part = get(native, "/static/data.bin", [("Range", "bytes=10-19")])
    assert part.status == 206
    assert part.body == CONTENT[10:20]
    assert part.header("content-range") == f"bytes 10-19/{len(CONTENT)}"
    tail = get(native, "/static/data.bin", [("Range", "bytes=-4")])
    assert (tail.status, tail.body) == (206, b"tail")
    bad = get(native, "/static/data.bin", [("Range", f"bytes={len(CONTENT)}-")])
    assert (bad.status, bad.reason) == (416, "Range Not Satisfiable")
    assert bad.header("content-range") == f"bytes */{len(CONTENT)}"


def drop_from_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("cached", [True, False], ids=["in-page-cache", "evicted"])
def test_large_files_and_ranges_arrive_whole(native: Server, cached: bool) -> None:
    """A large file goes out with sendfile where its pages are in the page cache, and is read
    through the ring where they are not (then sendfile once readahead brought them in): both
    ways, and from an odd offset, the bytes are the file's, and the connection stays usable."""
    for target, headers, want in [
        ("/static/large.bin", None, LARGE),
        ("/static/large.bin", [("Range", "bytes=70001-2300000")], LARGE[70001:2300001]),
    ]:
        if not cached:
            drop_from_page_cache(native.public / "large.bin")
        with rawhttp.Connection(native.host, native.port, timeout=30) as c:
            r = c.request("GET", target, headers)
            after = c.request("GET", "/static/css/site.css")
        assert r.status in (200, 206)
        assert r.header("content-length") == str(len(want))
        assert r.body == want
        assert (after.status, after.body) == (200, b"body { color: red }\n")


def test_clients_that_stop_reading_a_file_hold_up_no_other_request(native: Server) -> None:
    """A file goes out with sendfile, a synchronous call on the front-end thread: against a
    client that stops reading, it must give up at a full socket buffer and wait on the ring,
    not block the thread that serves every other connection."""
    (native.public / "huge.bin").write_bytes(bytes(64 << 20))
    stalled = []
    try:
        for _ in range(3):
            s = socket.create_connection((native.host, native.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /static/huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        time.sleep(0.5)  # their socket buffers fill
        for target in ("/static/css/site.css", "/json"):
            with rawhttp.Connection(native.host, native.port, timeout=10) as c:
                assert c.request("GET", target).status == 200, target
    finally:
        for s in stalled:
            s.close()


def test_head_keeps_the_connection_and_sends_no_body(native: Server) -> None:
    with rawhttp.Connection(native.host, native.port) as c:
        head = c.request("HEAD", "/static/data.bin")
        after = c.request("GET", "/static/css/site.css")
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(CONTENT))
    assert after.status == 200


@pytest.mark.parametrize("target", [
    "/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
    "/static/escape", "/static/missing", "/static/css",
])
def test_nothing_outside_the_root_and_no_directories(native: Server, target: str) -> None:
    r = get(native, target)
    assert r.status == 404, (target, r.status, r.body)
    assert b"do not serve" not in r.body


def test_a_fifo_under_the_root_is_a_404_and_holds_up_nothing(native: Server) -> None:
    # Opening a FIFO waits for a writer: the open used to hold the front-end thread, and
    # every connection on it, until one came (for ever). It is not a regular file: 404.
    with rawhttp.Connection(native.host, native.port, timeout=10) as c:
        r = c.request("GET", "/static/pipe")
        after = c.request("GET", "/static/data.bin")
    assert (r.status, after.status, after.body) == (404, 200, CONTENT)


def test_other_methods_are_refused(native: Server) -> None:
    refused = get(native, "/static/data.bin", method="DELETE")
    assert refused.status == 405
    assert refused.header("allow") == "GET, HEAD"  # RFC 9110 §15.5.6


def test_refusals_keep_the_connection(native: Server) -> None:
    """A 404 or 405 from a native route is an ordinary response: the next request on the
    connection is served, and a HEAD gets no body."""
    with rawhttp.Connection(native.host, native.port) as c:
        missing = c.request("GET", "/static/missing")
        missing_head = c.request("HEAD", "/static/missing")
        refused = c.request("DELETE", "/static/data.bin")
        after = c.request("GET", "/static/css/site.css")
    assert (missing.status, missing.body) == (404, b"404 Not Found\n")
    assert missing.header("connection") is None
    assert (missing_head.status, missing_head.body) == (404, b"")
    assert missing_head.header("content-length") == str(len(b"404 Not Found\n"))
    assert refused.status == 405
    assert (after.status, after.body) == (200, b"body { color: red }\n")


def test_refusal_of_a_request_with_a_body_closes(native: Server) -> None:
    """The body of a refused POST is not read, so the connection closes after the 405
    rather than taking the body for the next request."""
    with rawhttp.Connection(native.host, native.port) as c:
        r = c.request("POST", "/static/data.bin", [("Content-Length", "5")], body=b"hello")
    assert r.status == 405
    assert r.header("connection") == "close"


def test_health_path_and_app_routes_side_by_side(native: Server) -> None:
    health = get(native, "/healthz")
    assert (health.status, health.body) == (200, b"ok\n")
    assert get(native, "/json").status == 200, "the app still gets every other path"


def test_a_changed_file_is_served_fresh_within_the_cache_ttl(native: Server, tmp_path_factory) -> None:
    first = get(native, "/static/changing.txt")
    assert first.body == b"first\n"
    root = next(p for p in tmp_path_factory.getbasetemp().rglob("changing.txt"))
    root.write_text("second, longer\n")
    # Small files are cached per thread for a second; the new content must show up after
    # that (bounded wait, not a timing assertion).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = get(native, "/static/changing.txt")
        if r.body == b"second, longer\n":
            assert r.header("content-length") == str(len(r.body))
            return
        assert r.body == b"first\n", r.body
        time.sleep(0.2)
    raise AssertionError("the changed file was never served")
