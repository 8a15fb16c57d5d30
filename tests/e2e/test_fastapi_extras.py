"""FastAPI features that test_fastapi.py does not cover, through the real server
(tests/apps/fastapi_extras_app.py): dependency injection (nested, cached per request, yield
dependencies whose cleanup runs after the response), BackgroundTasks, HTTP middleware,
custom exception handlers and HTTPException headers, and `def` endpoints in the thread pool."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from harness import Server, ServerFactory

EVENT_TIMEOUT = 20.0  # hang guard for what the app records after a response


@pytest.fixture(scope="module")
def events_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fastapi-extras") / "events.log"


@pytest.fixture(scope="module")
def extras_server(servers: ServerFactory, events_path: Path) -> Server:
    return servers.start("fastapi_extras_app:app", workers=2, threads=1, probe_path="/sync",
                         env={"URINGAPI_TEST_EVENT_LOG": str(events_path)})


@pytest.fixture
def client(extras_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extras_server.base_url, timeout=30) as c:
        yield c


def wait_for_event(path: Path, *words: str) -> list[str]:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                event, pid, *rest = line.split()
                if [event, *rest] == list(words):
                    return [event, pid, *rest]
        time.sleep(0.02)
    pytest.fail(f"no event {words} in {path}")


def test_nested_dependencies_share_one_instance_per_request(client: httpx.Client) -> None:
    first = client.get("/greet", headers={"x-user": "ada"}).json()
    second = client.get("/greet", headers={"x-user": "ada"}).json()
    assert first["greeting"] == "hello ada" and first["same_counter"] is True
    assert second["same_counter"] is True


def test_dependency_can_refuse_the_request(client: httpx.Client) -> None:
    r = client.get("/greet")
    assert r.status_code == 401
    assert r.json() == {"detail": "no user"}


def test_yield_dependency_cleanup_runs_after_the_response(client: httpx.Client,
                                                          events_path: Path) -> None:
    tag = uuid.uuid4().hex
    body = client.get("/resource", params={"tag": tag}).json()
    assert body["tag"] == tag and body["open"] is True
    _, pid, _ = wait_for_event(events_path, "resource-closed", tag)
    assert int(pid) == body["pid"]


def test_background_task_runs_after_the_response(client: httpx.Client, events_path: Path) -> None:
    tag = uuid.uuid4().hex
    r = client.post("/background", params={"tag": tag})
    assert r.status_code == 200 and r.json() == {"scheduled": tag}
    wait_for_event(events_path, "background", tag)


def test_middleware_wraps_every_response(client: httpx.Client) -> None:
    for target, status in [("/sync", 200), ("/buy/pen", 200), ("/buy/sold-out-pen", 409),
                           ("/teapot", 418), ("/greet", 401), ("/nowhere", 404)]:
        r = client.get(target)
        assert r.status_code == status, target
        assert r.headers["x-middleware"] == "fastapi", target
        assert float(r.headers["x-elapsed-ms"]) >= 0


def test_custom_exception_handler(client: httpx.Client) -> None:
    assert client.get("/buy/pen").json() == {"bought": "pen"}
    r = client.get("/buy/sold-out-pen")
    assert r.status_code == 409
    assert r.json() == {"error": "out of stock", "item": "sold-out-pen"}


def test_http_exception_with_headers(client: httpx.Client) -> None:
    r = client.get("/teapot")
    assert r.status_code == 418
    assert r.json() == {"detail": "short and stout"}
    assert r.headers["x-kind"] == "teapot"


def test_def_endpoint_runs_in_the_thread_pool(client: httpx.Client) -> None:
    r = client.get("/sync")
    assert r.status_code == 200 and r.text == "main=False"
