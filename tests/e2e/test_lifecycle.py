"""Lifespan per worker, and graceful stop on SIGTERM/SIGINT: in-flight requests
finish, every worker runs lifespan shutdown, no process is left behind, exit 0."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import rawhttp
from harness import SERVER_KIND, ServerFactory


def read_events(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(e, int(pid)) for e, pid in (line.split() for line in log.read_text().splitlines())]


def wait_for_events(log: Path, event: str, count: int, timeout: float = 20.0) -> list[int]:
    """Pids of `event` lines once there are at least `count` of them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [pid for e, pid in read_events(log) if e == event]
        if len(pids) >= count:
            return pids
        assert time.monotonic() < deadline, f"{count} x {event!r} never logged: {read_events(log)}"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("workers", [1, 2], ids=["w1", "w2"])
def test_graceful_stop(servers: ServerFactory, tmp_path: Path, sig: int, workers: int) -> None:
    log = tmp_path / "events.log"
    server = servers.start(
        "fastapi_app:app", workers=workers, threads=1,
        env={"URINGAPI_TEST_EVENT_LOG": str(log)},
    )
    startup_pids = wait_for_events(log, "startup", workers)
    assert len(set(startup_pids)) == workers, f"one lifespan per worker: {startup_pids}"

    with rawhttp.Connection(server.host, server.port) as c:
        c.send(rawhttp.build_request("GET", "/sleep?s=1"))
        wait_for_events(log, "sleep-start", 1)
        rc = server.stop(sig)
        # The request that was running when the signal came is answered in full.
        r = c.read_response()
    assert r.status == 200, r.body
    assert json.loads(r.body)["pid"] in startup_pids

    if SERVER_KIND == "uringapi":
        assert rc == 0, f"exit code {rc} after {sig.name}\n{server.stderr_tail()}"
    # (uvicorn re-raises the signal after its graceful shutdown, so its code is not 0.)
    events = read_events(log)
    shutdown_pids = [pid for e, pid in events if e == "shutdown"]
    assert Counter(shutdown_pids) == Counter(startup_pids), f"lifespan shutdown per worker: {events}"
    assert server.left_behind == [], f"processes alive after the server exited: {server.left_behind}"
