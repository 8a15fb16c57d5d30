"""An unmodified Litestar app (tests/apps/litestar_app.py) through the real server: routing
with typed path parameters, dependency injection (nested and generator dependencies),
background tasks, file and streaming responses, exception handlers, middleware, JSON
bodies, and on_startup/on_shutdown with a lifespan context manager in every worker."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import rawhttp
from harness import Server, ServerFactory

APP_EVENTS_TIMEOUT = 20.0  # hang guard for events written after a response


def file_bytes(size: int = 300_000) -> bytes:
    """The bytes the app's /file serves (litestar_app.file_bytes)."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(blocks))[:size]


@pytest.fixture(scope="module")
def events_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("litestar") / "events.log"


@pytest.fixture(scope="module")
def litestar_server(servers: ServerFactory, events_path: Path) -> Server:
    return servers.start("litestar_app:app", workers=2, threads=1,
                         env={"URINGAPI_TEST_EVENT_LOG": str(events_path)})


@pytest.fixture
def client(litestar_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=litestar_server.base_url, timeout=30) as c:
        yield c


def wait_for_event(path: Path, *words: str) -> list[str]:
    """The first event line whose fields after the pid are `words` (bounded wait)."""
    deadline = time.monotonic() + APP_EVENTS_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                event, pid, *rest = line.split()
                if [event, *rest] == list(words):
                    return [event, pid, *rest]
        time.sleep(0.02)
    pytest.fail(f"no event {words} in {path}")


def test_plain_text_route_and_middleware_header(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.text == "Hello from Litestar"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-stamp"] == "litestar-mw"  # added by StampMiddleware


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/items/42", {"item_id": 42, "q": None, "limit": 10}),
        ("/items/7?q=abc&limit=3", {"item_id": 7, "q": "abc", "limit": 3}),
        ("/users/alice/posts/9", {"name": "alice", "post_id": 9}),
        ("/users/caf%C3%A9/posts/1", {"name": "café", "post_id": 1}),
    ],
)
def test_typed_path_and_query_params(client: httpx.Client, target: str, expected: dict) -> None:
    r = client.get(target)
    assert r.status_code == 200, r.text
    assert r.json() == expected


def test_path_param_of_wrong_type_does_not_match(client: httpx.Client) -> None:
    assert client.get("/items/abc").status_code == 404
    assert client.get("/items/1?limit=many").status_code == 400


def test_dependency_injection_nested_and_app_level(client: httpx.Client) -> None:
    assert client.get("/greet").json() == {"greeting": "hello from litestar", "settings": "hello"}


def test_generator_dependency_cleanup_runs_after_the_handler(client: httpx.Client,
                                                              events_path: Path) -> None:
    tag = uuid.uuid4().hex
    body = client.get("/session", params={"tag": tag}).json()
    assert body["open"] is True and body["tag"] == tag
    _, pid, _ = wait_for_event(events_path, "session-closed", tag)
    assert int(pid) == body["pid"]


def test_json_body_to_dataclass(client: httpx.Client) -> None:
    item = {"name": "widget", "price": 9.5, "tags": ["a", "b"]}
    r = client.post("/items", json=item)
    assert r.status_code == 201
    assert r.json() == item
    assert client.post("/items", json={"name": "x", "price": 1}).json()["tags"] == []


def test_invalid_json_body_is_400_with_details(client: httpx.Client) -> None:
    r = client.post("/items", json={"name": "widget"})
    assert r.status_code == 400
    detail = r.json()
    assert detail["detail"] == "Validation failed for POST /items"
    assert "price" in detail["extra"][0]["message"]
    r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_larger_json_body_round_trip(client: httpx.Client) -> None:
    data = {f"key{i:05d}": ["v" * 20, i] for i in range(5000)}  # ~200 KB, several reads
    r = client.post("/echo-json", json=data)
    assert r.status_code == 201
    assert r.json() == {"received": data, "keys": sorted(data)}


def test_background_task_runs_after_the_response(client: httpx.Client, events_path: Path) -> None:
    tag = uuid.uuid4().hex
    r = client.get("/background", params={"tag": tag})
    assert r.status_code == 200 and r.text == "scheduled"
    wait_for_event(events_path, "background", tag)


def test_file_response_byte_exact(client: httpx.Client) -> None:
    r = client.get("/file")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="data.bin"'
    assert r.headers["content-length"] == str(len(file_bytes()))
    assert r.content == file_bytes()


def test_head_of_file_has_length_but_no_body(litestar_server: Server) -> None:
    with rawhttp.Connection(litestar_server.host, litestar_server.port) as c:
        r = c.request("HEAD", "/file")
        assert r.status == 200 and r.body == b""
        assert r.header("content-length") == str(len(file_bytes()))
        # The connection is still in step: a GET on it gets the whole file.
        assert c.request("GET", "/file").body == file_bytes()


def test_streaming_response_is_chunked_and_in_order(litestar_server: Server) -> None:
    with rawhttp.Connection(litestar_server.host, litestar_server.port) as c:
        r = c.request("GET", "/stream?n=200")
    assert r.status == 200
    assert r.chunked
    assert r.body == b"".join(f"line {i}\n".encode() for i in range(200))


@pytest.mark.parametrize(
    "target, status, body",
    [
        ("/teapot", 418, {"error": "teapot", "detail": "short and stout", "path": "/teapot"}),
        ("/forbidden", 403, {"status_code": 403, "detail": "no entry"}),
        ("/missing/thing", 404, {"status_code": 404, "detail": "no thing"}),
        ("/boom", 500, {"status_code": 500, "detail": "Internal Server Error"}),
    ],
)
def test_exceptions_and_handlers(client: httpx.Client, target: str, status: int,
                                 body: dict) -> None:
    r = client.get(target)
    assert r.status_code == status
    assert r.json() == body
    assert r.headers["x-stamp"] == "litestar-mw"  # the middleware wraps error responses too
    assert client.get("/").status_code == 200  # and the worker keeps serving


def test_on_startup_and_lifespan_ran_in_every_worker(client: httpx.Client, litestar_server: Server,
                                                     events_path: Path) -> None:
    s = client.get("/state").json()
    assert s["startup_pid"] == s["pid"], "the state comes from another process's on_startup"
    assert s["lifespan_entered"] is True and s["file"] is True
    startups = {line.split()[1] for line in events_path.read_text().splitlines()
                if line.startswith("startup ")}
    assert len(startups) == litestar_server.workers, startups


def test_shutdown_hooks_run_on_stop(servers: ServerFactory, tmp_path: Path) -> None:
    events = tmp_path / "events.log"
    server = servers.start("litestar_app:app", workers=1, threads=1,
                           env={"URINGAPI_TEST_EVENT_LOG": str(events)})
    assert httpx.get(f"{server.base_url}/", timeout=30).status_code == 200
    code = server.stop()
    if server.kind == "uringapi":
        assert code == 0
    lines = [line.split()[0] for line in events.read_text().splitlines()]
    assert lines == ["startup", "shutdown"]
