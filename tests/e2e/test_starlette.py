"""A plain Starlette app: routing, thread-pool endpoints, streamed request bodies,
middleware and background tasks."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from harness import Server


@pytest.fixture
def client(starlette_server: Server) -> httpx.Client:
    with httpx.Client(base_url=starlette_server.base_url, timeout=30) as c:
        yield c


def test_homepage(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.content == b"Hello from Starlette"
    assert "x-process-time" in r.headers  # set by the middleware


def test_typed_path_param(client: httpx.Client) -> None:
    assert client.get("/users/123").json()["user_id"] == 123
    assert client.get("/users/abc").status_code == 404


def test_sync_endpoint_runs_in_thread_pool(client: httpx.Client) -> None:
    r = client.get("/sync")
    assert r.status_code == 200
    assert r.json() == {"in_main_thread": False}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_streamed_request_body(client: httpx.Client, chunked: bool) -> None:
    parts = [bytes([i % 256]) * (1000 * i + 1) for i in range(40)]
    body = b"".join(parts)
    r = client.post("/upload", content=iter(parts) if chunked else body)
    assert r.status_code == 200
    assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_background_task_runs_after_response(client: httpx.Client) -> None:
    before = client.get("/background/status").json()["done"]
    r = client.get("/background")
    assert r.content == b"scheduled"
    deadline = time.monotonic() + 10
    while client.get("/background/status").json()["done"] <= before:
        assert time.monotonic() < deadline, "background task never ran"
        time.sleep(0.05)
