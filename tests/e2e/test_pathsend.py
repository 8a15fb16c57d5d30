"""http.response.pathsend: the worker names a file and the front end sends it, so file
bytes never pass through Python (Starlette's FileResponse uses it when offered)."""

from __future__ import annotations

import json

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

