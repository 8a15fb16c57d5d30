"""Many connections and requests at once; requests interleave inside one worker; all
workers take requests; a keep-alive connection stays on its worker while that is idle."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import rawhttp
from harness import Server, ServerFactory

CONNECTIONS = 50
REQUESTS_PER_CONNECTION = 4


def _one_connection(server: Server, conn_id: int, barrier: threading.Barrier) -> list[str]:
    """Opens a connection, waits until every connection is open, then sends its
    requests one after another on it (keep-alive). Returns a list of problems."""
    problems = []
    with rawhttp.Connection(server.host, server.port) as c:
        barrier.wait(timeout=30)
        for k in range(REQUESTS_PER_CONNECTION):
            tag = f"c{conn_id}r{k}"
            if k % 2 == 0:
                r = c.request("GET", f"/items/{conn_id * 100 + k}?q={tag}&limit={k}")
                expected = {"item_id": conn_id * 100 + k, "q": tag, "limit": k}
                got = json.loads(r.body) if r.status == 200 else r.body
            else:
                body = (f"{tag};" * (1 + conn_id * 37 % 500)).encode()
                r = c.request("POST", "/echo", [("Content-Type", "application/octet-stream")], body)
                expected, got = body, r.body
            if r.status != 200 or got != expected:
                problems.append(f"{tag}: status {r.status}, expected {expected!r:.80}, got {got!r:.80}")
            if "close" in r.connection_tokens():
                problems.append(f"{tag}: server closed a keep-alive connection")
                break
    return problems


def test_200_requests_over_50_keepalive_connections(fastapi_server: Server) -> None:
    barrier = threading.Barrier(CONNECTIONS)
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        futures = [pool.submit(_one_connection, fastapi_server, i, barrier) for i in range(CONNECTIONS)]
        problems = [p for f in futures for p in f.result(timeout=90)]
    assert problems == []


def test_200_concurrent_requests_httpx(fastapi_server: Server) -> None:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=fastapi_server.base_url, limits=limits, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/echo", content=f"request {i} ".encode() * (i + 1)) for i in range(200))
            )

    responses = asyncio.run(run())
    for i, r in enumerate(responses):
        assert r.status_code == 200
        assert r.content == f"request {i} ".encode() * (i + 1)


@pytest.mark.parametrize("server_fixture", ["fastapi_w1t1", "fastapi_w1t2"])
def test_one_worker_interleaves_awaiting_requests(
    request: pytest.FixtureRequest, server_fixture: str
) -> None:
    """Two requests that await asyncio.sleep on ONE worker run at the same time: the
    intervals the app reports (its own monotonic clock, same process) overlap."""
    server: Server = request.getfixturevalue(server_fixture)
    assert server.workers == 1

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            rs = await asyncio.gather(*(c.get("/sleep", params={"s": 0.5}) for _ in range(2)))
        assert [r.status_code for r in rs] == [200, 200]
        return [r.json() for r in rs]

    first, second = sorted(asyncio.run(run()), key=lambda d: d["start"])
    assert first["pid"] == second["pid"]
    assert second["start"] < first["end"], (
        f"requests ran one after the other: {first} then {second}"
    )


def test_requests_reach_every_worker(fastapi_w2t2: Server) -> None:
    """With --workers 2, requests spread over both worker processes. The handler awaits
    briefly so several requests are outstanding at once, as under real load."""
    server = fastapi_w2t2

    async def round_of_requests() -> set[int]:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as c:
            rs = await asyncio.gather(*(c.get("/sleep", params={"s": 0.02}) for _ in range(200)))
        assert all(r.status_code == 200 for r in rs)
        return {r.json()["pid"] for r in rs}

    pids: set[int] = set()
    for _ in range(3):  # a worker may still be starting during the first round
        pids |= asyncio.run(round_of_requests())
        if len(pids) >= 2:
            break
    assert len(pids) == 2, f"worker pids seen: {pids}"


def test_a_keep_alive_connection_stays_on_its_idle_worker(servers: ServerFactory) -> None:
    """Requests one after another on one keep-alive connection, HTTP/1.1 or HTTP/2, are
    served by one worker process while it is idle, as a connection is under uvicorn or
    gunicorn with several workers: what an app keeps in process memory (a cache, a
    session) looks the same to that client from one request to the next. They went to the
    workers in turn, so every second request of a client ran in the other process. New
    connections still take turns over the idle workers."""
    server = servers.start("fastapi_app:app", workers=2, threads=1)
    for http2 in (False, True):
        with httpx.Client(base_url=server.base_url, http1=not http2, http2=http2, timeout=30) as c:
            answers = [c.get("/sleep", params={"s": 0}) for _ in range(20)]
            assert {r.http_version for r in answers} == {"HTTP/2" if http2 else "HTTP/1.1"}
        pids = [r.json()["pid"] for r in answers]
        assert len(set(pids)) == 1, f"one connection, HTTP/2 {http2}: pids {pids}"
    fresh = [httpx.get(f"{server.base_url}/sleep", params={"s": 0}, timeout=30) for _ in range(10)]
    pids = [r.json()["pid"] for r in fresh]
    assert len(set(pids)) == 2, f"new connections: pids {pids}"
