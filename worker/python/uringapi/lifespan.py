"""The ASGI lifespan protocol, run once per worker before it takes requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("uringapi.error")


class LifespanFailed(Exception):
    """The app's lifespan startup (or shutdown) failed; the message says why."""


class Lifespan:
    """Runs ``app({"type": "lifespan", ...})`` as a task and talks to it through queues.

    ``mode`` is ``auto``, ``on`` or ``off``, as uvicorn's ``--lifespan``. In ``auto`` an app
    that raises before it even asked for the startup message is taken not to support
    lifespan; one that raises after it received ``lifespan.startup`` has failed to start —
    that is a broken app (a database that is down, say), not an unsupported protocol.
    """

    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._asked_startup = False
        self._failure: str | None = None
        self._unsupported = False
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if self.mode == "off":
            return
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise LifespanFailed(self._failure)

    async def shutdown(self) -> None:
        if self._task is None or self._unsupported or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._failure is not None:
            logger.error("lifespan shutdown failed: %s", self._failure)

    async def _receive(self) -> dict[str, Any]:
        message = await self._inbox.get()
        if message["type"] == "lifespan.startup":
            self._asked_startup = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message") or "lifespan.startup.failed"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = message.get("message") or "lifespan.shutdown.failed"
            self._stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the supervisor
            if self._started.is_set() and self._failure is not None:
                pass  # the app already reported startup.failed and re-raised
            elif self.mode == "auto" and not self._asked_startup and not self._started.is_set():
                self._unsupported = True
                logger.debug("ASGI 'lifespan' protocol appears unsupported (%r)", exc)
            elif not self._started.is_set():
                self._failure = f"{type(exc).__name__}: {exc}"
                logger.error("exception in lifespan startup", exc_info=exc)
            else:
                logger.error("exception in lifespan", exc_info=exc)
                self._failure = self._failure or f"{type(exc).__name__}: {exc}"
        finally:
            self._started.set()
            self._stopped.set()
