"""An unmodified Django project (tests/apps/django_app.py) through Django's own ASGI handler:
plain and streamed responses, uploads through request.FILES, a view that raises. Django runs
each view beside a task that waits in `receive()` and cancels the response when that says
http.disconnect, so `receive()` must not say it before the response's last record is on its
way: it did while that record waited for the response window, and the response never ended
(its last chunk lost, the connection left open)."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

import rawhttp
from harness import Server, ServerFactory

GUARD = 30.0  # seconds: a bound against hangs, never a speed claim


@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Server:
    return servers.start("django_app:application", workers=1)


def streamed(n: int, size: int) -> bytes:
    """The body /astream?n=N&size=S sends (django_app.piece)."""
    return b"".join(b"%d:" % i + b"z" * max(size - len(b"%d:" % i), 0) for i in range(n))


def test_streamed_responses_on_one_connection_each_end(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=GUARD) as client:
        for _ in range(20):
            r = client.get("/astream", params={"n": 200, "size": 10})
            assert r.status_code == 200
            assert r.content == streamed(200, 10)
        r = client.get("/lines", params={"n": 500})
        assert r.text == "".join(f"line {i}\n" for i in range(500))


def test_a_streamed_response_read_late_ends_whole(server: Server) -> None:
    # The client reads nothing for a while, so the app's pieces fill the window and its
    # last one waits: the response must still end, with its last chunk.
    # (A worker's first streamed responses, Django still warming up, seldom showed it.)
    n, size = 200, 16384
    for _ in range(3):
        with rawhttp.Connection(server.host, server.port, timeout=GUARD) as conn:
            conn.send(rawhttp.build_request("GET", f"/astream?n={n}&size={size}",
                                            [("Connection", "close")]))
            time.sleep(0.5)
            try:
                resp = conn.read_response("GET")
            except TimeoutError:
                pytest.fail("the response never ended (no last chunk)")
        assert resp.status == 200 and resp.chunked
        assert resp.body == streamed(n, size)


def test_views_uploads_and_errors(server: Server) -> None:
    data = os.urandom(3_000_000)
    with httpx.Client(base_url=server.base_url, timeout=GUARD) as client:
        r = client.get("/")
        assert (r.status_code, r.text) == (200, "hello from django")
        r = client.post("/upload", files={"f": ("a.bin", data)}, data={"k": "v"})
        assert r.status_code == 200
        assert r.json() == {"files": {"f": [len(data), hashlib.sha256(data).hexdigest()]},
                            "fields": {"k": ["v"]}}
        assert client.get("/boom").status_code == 500
        assert client.get("/nope").status_code == 404
        # The connection and the worker carry on after the error.
        assert client.get("/").status_code == 200
