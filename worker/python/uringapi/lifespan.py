"""The ASGI lifespan protocol, run once per worker before it takes requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("uringapi.error")


#: Seconds a lifespan task cancelled at the end of its shutdown budget has to finish.
CANCEL_WAIT = 0.5


class LifespanFailed(Exception):
    """The app's lifespan startup failed; the message says why (`timed_out`: it ran past
    its budget and was cancelled)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


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
        #: Set when startup or shutdown ran past its budget and the task was cancelled.
        self._overdue: str | None = None
        self._overdue_told = False

    async def startup(self, budget: float | None) -> None:
        """Runs the app's lifespan startup, for at most `budget` seconds (None: no limit;
        past it the task is cancelled, the log shows where it was, and LifespanFailed)."""
        if self.mode == "off":
            return
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        if not await self._within(self._started, budget, "lifespan startup still running at the end of --timeout-worker-startup"):
            raise LifespanFailed("it did not finish in time", timed_out=True)
        if self._failure is not None:
            raise LifespanFailed(self._failure)

    async def shutdown(self, budget: float) -> None:
        """Sends ``lifespan.shutdown`` and waits up to `budget` seconds for the app's answer.

        An app whose shutdown never ends (a pool close that hangs) would hold the worker
        until the front end killed it, and the kill would not say why: past the budget the
        app's lifespan task is cancelled, the log shows where it was waiting (the
        cancellation's traceback), and the worker goes on to exit. (uvicorn waits for ever;
        gunicorn kills without a word.)"""
        if self._task is None or self._unsupported or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        overdue = f"lifespan shutdown still running after {budget:.1f} s (the rest of the graceful timeout plus 3 s)"
        if not await self._within(self._stopped, budget, overdue):
            return
        if self._failure is not None:
            logger.error("lifespan shutdown failed: %s", self._failure)

    async def _within(self, done: asyncio.Event, budget: float | None, overdue: str) -> bool:
        """Waits for `done` up to `budget` seconds. Past it: cancels the app's lifespan
        task, logs `overdue` and where it was (the cancellation's traceback, logged by ``_main``, or the
        awaited frames when the app caught the cancellation) and returns False."""
        try:
            await asyncio.wait_for(done.wait(), budget)
            return True
        except asyncio.TimeoutError:
            pass
        assert self._task is not None
        self._overdue = f"{overdue}: cancelled"
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=CANCEL_WAIT)
        if self._overdue_told:
            pass
        elif self._task.done():
            logger.error("%s; the app's lifespan caught the cancellation and ended", self._overdue)
        else:
            logger.error("%s, but the app's lifespan ignores the cancellation; it is here:\n%s",
                         self._overdue, "\n".join(awaiting(self._task.get_coro())))
        return False

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
            if self._overdue is not None and isinstance(exc, asyncio.CancelledError):
                self._overdue_told = True
                logger.error("%s; it was here:", self._overdue, exc_info=exc)
            elif self._started.is_set() and self._failure is not None:
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


def awaiting(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: its frame, then that of what it awaits, and so
    on (as far as the chain shows frames: an async generator's ``asend`` hides its own)."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return lines
