"""Servers and helpers for the WebSocket suites (test_websocket_*.py).

The server under test is chosen as for every e2e suite, by URINGAPI_TEST_SERVER:
`uringapi` (default) or `uvicorn`, which runs these same tests against uvicorn with its
`websockets` backend to show that the tests themselves are right. The flags are spelled
as uringapi spells them; uvicorn shares the `--ws-*` spellings, and `--ws off` becomes its
`--ws none`.

What the apps see inside their workers comes back through the event log (tests/apps/
events.py): "ws-disconnect <pid> <tag> <code> <reason>" and "ws-flood-end <pid> <tag>
<bytes sent> <exception>".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Awaitable, TypeVar

from harness import SERVER_KIND, Server, ServerFactory

GUARD = 20.0  # seconds: the hang guard of every bounded wait in these suites
APPS = {"fastapi": "ws_fastapi_app:app", "starlette": "ws_starlette_app:app"}

T = TypeVar("T")


def server_args(*flags: str) -> tuple[str, ...]:
    """uringapi's flags, or their uvicorn spelling; uvicorn always uses `websockets`."""
    if SERVER_KIND != "uvicorn":
        return flags
    out = list(flags)
    if "--ws" in out:
        i = out.index("--ws")
        out[i + 1] = {"off": "none", "auto": "websockets"}[out[i + 1]]
    else:
        out += ["--ws", "websockets"]
    return tuple(out)


class Events:
    """The app's event log (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines()]

    def wait(self, event: str, tag: str, timeout: float = GUARD) -> list[str]:
        """The first `event` line logged for `tag`: [event, pid, tag, ...]; fails after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [f for f in self.lines() if f[0] == event and f[2] == tag]
            if found:
                return found[0]
            assert time.monotonic() < deadline, (
                f"the app never logged {event} for {tag}; log: {self.lines()[-20:]}")
            time.sleep(0.02)


class WsServer:
    """A running server with its event log and URLs."""

    def __init__(self, server: Server, events: Events) -> None:
        self.server = server
        self.events = events

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return f"ws://{self.server.host}:{self.server.port}{path}"


def start(servers: ServerFactory, tmp: Path, app: str = "fastapi", *flags: str,
          workers: int = 1, threads: int = 1, log_level: str = "info") -> WsServer:
    log = tmp / f"events-{uuid.uuid4().hex[:8]}.log"
    server = servers.start(APPS.get(app, app), workers=workers, threads=threads, log_level=log_level,
                           extra_args=server_args(*flags),
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)})
    return WsServer(server, Events(log))


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def run(coro: Awaitable[T], timeout: float = GUARD * 3) -> T:
    """Runs one client coroutine with a hang guard."""
    async def guarded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(guarded())
