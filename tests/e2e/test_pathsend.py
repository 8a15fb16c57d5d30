"""http.response.pathsend: the worker names a file and the front end sends it, so file
bytes never pass through Python (Starlette's FileResponse uses it when offered)."""

from __future__ import annotations

import json

import httpx
import pytest

import rawhttp
from harness import Server

BIG_LEN = 1024 * 1024 + 3
BIG = bytes((i * 7 + i // 251) & 0xFF for i in range(BIG_LEN))

pytestmark = pytest.mark.uringapi_only  # uvicorn does not offer the extension


@pytest.fixture(scope="module")
def files_server(servers) -> Server:
    return servers.start("files_app:app", workers=1, threads=1, probe_path="/messages")


def test_file_response_is_sent_by_the_front_end(files_server: Server) -> None:
    with rawhttp.Connection(files_server.host, files_server.port, timeout=30) as c:
        r = c.request("GET", "/big")
        assert r.status == 200
        assert r.header("content-length") == str(BIG_LEN)
        assert r.body == BIG
        # Keep-alive holds after a file: the next request on the connection works.
        m = c.request("GET", "/messages")
    assert m.status == 200
    assert json.loads(m.body)["/big"][-1] == ["http.response.start", "http.response.pathsend"]


def test_a_file_response_with_a_relative_path_is_the_apps_file(files_server: Server) -> None:
    # FileResponse("big.bin") from a worker whose working directory is not the front end's:
    # a 500 ("pathsend needs an absolute path") before; uvicorn serves it (no pathsend).
    with rawhttp.Connection(files_server.host, files_server.port, timeout=30) as c:
        r = c.request("GET", "/relative")
    assert r.status == 200, r.body[:200]
    assert r.body == BIG


def test_head_of_a_file_has_its_length_and_no_body(files_server: Server) -> None:
    with rawhttp.Connection(files_server.host, files_server.port) as c:
        r = c.request("HEAD", "/big")
        after = c.request("GET", "/empty")
    assert r.status == 200
    assert r.header("content-length") == str(BIG_LEN)
    assert r.body == b""
    assert (after.status, after.body, after.header("content-length")) == (200, b"", "0")


def test_file_after_a_head_sent_on_its_own(files_server: Server) -> None:
    with rawhttp.Connection(files_server.host, files_server.port, timeout=30) as c:
        r = c.request("GET", "/after-start")
    assert r.status == 200
    assert r.body == BIG


def test_missing_file_is_a_500_and_a_logged_reason(files_server: Server) -> None:
    with rawhttp.Connection(files_server.host, files_server.port) as c:
        r = c.request("GET", "/missing")
        assert r.status == 500
        assert c.closed_by_peer()
    assert "pathsend" in files_server.stderr()



@pytest.mark.parametrize("path", ["/missing", "/device", "/fifo"])
def test_a_file_that_cannot_be_sent_is_a_500_over_http2_too(files_server: Server, path: str) -> None:
    # The file is opened before the head goes out: a missing file, or a device that would
    # stream for ever (/dev/zero), is a 500 with its reason logged, over both versions.
    with httpx.Client(base_url=files_server.base_url, timeout=30) as one, \
            httpx.Client(base_url=files_server.base_url, http1=False, http2=True, timeout=30) as two:
        r1, r2 = one.get(path), two.get(path)
    assert (r2.http_version, r2.status_code, r2.content) == ("HTTP/2", 500, r1.content)
    assert r1.status_code == 500
    assert ("cannot open the file" if path == "/missing" else "not a regular file") in files_server.stderr()
