"""A uringapi worker process: imports the app, runs its lifespan, then serves requests that
the front end writes into shared memory, one asyncio task per request, on uvloop.

Started by the front end as ``python -m uringapi.worker`` with its settings and inherited
file descriptors in ``URINGAPI_*`` environment variables (see the README).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime
import faulthandler
import gc
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections import deque
from typing import Any, Callable, NoReturn

from uringapi import _native
from uringapi.lifespan import Lifespan, LifespanFailed
from uringapi.startup import HINT as STARTUP_HINT
from uringapi.startup import StartupLimit
from uringapi.stopping import Sigterm, bound_the_exit, cancel_leftovers, die_with_the_front_end
from uringapi.websocket import WebSocketCycle, as_bytes
from uringapi.window import give_back, take_body

logger = logging.getLogger("uringapi.error")

#: Exit code for "the app could not start" (the supervisor stops the server on it).
STARTUP_FAILED = 3
#: Seconds between heartbeats in shared memory, unless the front end asks for another
#: period (URINGAPI_HEARTBEAT, a quarter of --stall-timeout).
HEARTBEAT = 0.025
#: Seconds between releases of the shared-memory pages a burst touched (``serve``).
TRIM_SLOTS_EVERY = 0.25
#: Seconds lifespan shutdown may run past the graceful timeout. The front end SIGKILLs a
#: stopping worker 5 s past it (supervisor/watch.rs KILL_GRACE); this leaves the worker
#: time to log where a hung shutdown was and cancel it (0.5 s), cancel the tasks the app
#: left running (0.5 s) and exit by itself (stopping.EXIT_WAIT, 0.5 s).
LIFESPAN_OVERTIME = 3.0

#: Python 3.12 runs a new task's first step inside the Task constructor (``eager_start``),
#: with the task current and in its own context as usual: an app that answers without
#: waiting is done before it would even have been scheduled.
EAGER_TASKS = sys.version_info >= (3, 12)
#: Before 3.12 a task formats its default name ("Task-123") when it is made; request tasks
#: there share this one instead.
TASK_NAME = "uringapi-request"

EV_REQUEST, EV_BODY, EV_DISCONNECT, EV_CANCEL = (
    _native.EV_REQUEST,
    _native.EV_BODY,
    _native.EV_DISCONNECT,
    _native.EV_CANCEL,
)
EV_WS_CONNECT, EV_WS_MESSAGE, EV_WS_DISCONNECT, EV_WS_CREDIT = (
    _native.EV_WS_CONNECT,
    _native.EV_WS_MESSAGE,
    _native.EV_WS_DISCONNECT,
    _native.EV_WS_CREDIT,
)
RESPONSE_WINDOW = _native.RESPONSE_WINDOW


class ClientDisconnected(OSError):
    """Raised by ``send()`` when the client has gone away. Not logged as an error."""


#: ``BaseExceptionGroup`` where the language has it (3.11 on), which anyio task groups raise.
_GROUP: type | tuple[()] = getattr(builtins, "BaseExceptionGroup", ())


def _from_disconnect(exc: BaseException | None, depth: int = 0) -> bool:
    """Whether the app's exception comes from a ``send()`` that found the client gone: the
    ``ClientDisconnected`` itself, or what the framework raised while handling it (Starlette
    turns it into ``ClientDisconnect``), or a group of only such exceptions."""
    if exc is None or depth > 16:
        return False
    if isinstance(exc, ClientDisconnected):
        return True
    if isinstance(exc, _GROUP):
        return all(_from_disconnect(e, depth + 1) for e in exc.exceptions)
    return _from_disconnect(exc.__cause__ or exc.__context__, depth + 1)


class StartupError(Exception):
    """The app could not be imported or started; carries the error and a hint."""

    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.error = error
        self.hint = hint


def import_app(spec: str, factory: bool = False) -> Any:
    module_name, _, attrs = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StartupError(
                f"could not import module {module_name!r}: {exc}",
                "run uringapi from the folder that holds the module, or pass --app-dir",
            ) from exc
        traceback.print_exc()
        raise StartupError(
            f"importing {module_name!r} failed: {exc}",
            "install the missing package into the Python environment that runs the workers",
        ) from exc
    except BaseException as exc:  # noqa: BLE001 - a broken app module must not crash silently
        traceback.print_exc()
        raise StartupError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}",
            "fix the error in the traceback above",
        ) from exc
    app: Any = module
    for attr in attrs.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError as exc:
            raise StartupError(
                f"attribute {attrs!r} not found in module {module_name!r}",
                "check the name after the colon, e.g. 'main:app' for `app = FastAPI()` in main.py",
            ) from exc
    if factory:
        if not callable(app):
            raise StartupError(f"--factory: {spec!r} is not callable", "point uringapi at a function that returns the app")
        try:
            app = app()
        except BaseException as exc:  # noqa: BLE001 - a failing factory must not crash silently
            traceback.print_exc()
            raise StartupError(
                f"the app factory {spec!r} raised {type(exc).__name__}: {exc}",
                "fix the error in the traceback above",
            ) from exc
    if not callable(app):
        raise StartupError(f"{spec!r} is not callable", "point uringapi at the ASGI application object")
    return app


def apply_log_config(path: str) -> None:
    """``--log-config``: a JSON dictConfig file, a YAML one (when PyYAML is installed), or an
    .ini fileConfig file, applied on top of uringapi's own logging set-up."""
    import logging.config

    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        elif path.endswith((".yaml", ".yml")):
            import yaml  # type: ignore[import-untyped]

            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(yaml.safe_load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as exc:  # noqa: BLE001 - reported as a start-up error
        raise StartupError(
            f"--log-config {path}: {type(exc).__name__}: {exc}",
            "pass a valid JSON dictConfig file (.json), YAML (.yaml, needs PyYAML) or an .ini fileConfig file",
        ) from exc


class Cycle:
    """One request: its ASGI ``receive``/``send`` and the state they share."""

    __slots__ = (
        "worker", "key", "scope", "body", "more_body", "chunks", "waiter",
        "disconnected", "started", "head", "head_sent", "complete", "task", "flushing",
        "continue_pending", "owed", "crediting", "claim", "window", "window_waiter",
    )

    def __init__(self, worker: Worker, key: int, scope: dict[str, Any], body: bytes, more: int,
                 claim: int = 0, window: int = RESPONSE_WINDOW) -> None:
        self.worker = worker
        #: The request's claim word (0: none): the front end may take a request back from a
        #: stalled worker until its task starts and claims it (ring.rs rules 8 to 10).
        self.claim = claim
        self.key = key
        self.scope = scope
        #: The body that came with the request, until ``receive()`` hands it out; later
        #: chunks queue in ``chunks``, made on the first one (most requests have none).
        #: None when the head came alone and a body is to follow: the first ``receive()``
        #: then waits for body bytes instead of handing out an empty message, as uvicorn.
        self.body: bytes | None = body if body or not more else None
        self.more_body = more != 0
        self.chunks: deque[tuple[bytes, bool]] | None = None
        #: The client waits for ``100 Continue`` before sending its body (``more == 2``);
        #: it goes out when the app first asks for the body, as RFC 9110 §10.1.1 intends.
        self.continue_pending = more == 2
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.head: bytes | None = None
        self.head_sent = False
        self.complete = False
        self.task: asyncio.Task[None] | None = None
        #: A head flushed on its own that is still waiting for ring space.
        self.flushing: asyncio.Task[None] | None = None
        #: Body records taken and not yet returned to the front end's window (the front
        #: end sends at most its window of them unreturned, so ``chunks`` stays short).
        self.owed = 0
        self.crediting = False
        #: Response records with more to come that the front end may still send now: it
        #: acknowledges them once written to the client (ring.rs rule 7), so a client that
        #: reads slowly holds this app's send(), not every response slot of the worker.
        #: PERF: benches/e2e/stream_window_ab.py against the window ignored: 50,000 pieces
        #: of 100 bytes, same server CPU (158 vs 163 ticks), 14% more wall time; 1 GiB in
        #: 1 MiB pieces, 113 vs 172 ticks (benches/results/ab-response-window-2026-12-06.txt).
        #: An HTTP/2 stream may be given fewer (the request's record says how many).
        self.window = window
        self.window_waiter: asyncio.Future[None] | None = None

    # ---- events from the front end ----
    def credit(self, n: int) -> None:
        self.window += n
        if self.window_waiter is not None and not self.window_waiter.done():
            self.window_waiter.set_result(None)

    def feed(self, body: bytes, more: bool) -> None:
        if not body and more:
            give_back(self)  # nothing for the app yet
            return
        if self.chunks is None:
            self.chunks = deque()
        self.chunks.append((body, more))
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()
        self.credit(0)  # a send waiting for the window sees the client gone

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # ---- the ASGI callables ----
    async def receive(self) -> dict[str, Any]:
        while True:
            # Once the response is complete (or the client left) the request is over,
            # whatever body was left unread (ASGI spec; uvicorn does the same).
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            body = self.body
            if body is not None:
                self.body = None
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self.chunks:
                body, more = take_body(self, self.chunks)
                return {"type": "http.request", "body": body, "more_body": more}
            if self.continue_pending:
                self.continue_pending = False
                while not self.worker.native.send_continue(self.key):
                    await self.worker.wait_space()
            self.waiter = self.worker.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            # A wrong status or header is the app's error, raised here (TypeError for a
            # status that is not an int, as uvicorn for a header of the wrong type;
            # RuntimeError for an invalid value), before anything counts as started (so the
            # failure can still be a 500). The head is encoded once, here, and copied into
            # the slot when it goes out.
            worker = self.worker
            status = message["status"]
            if not isinstance(status, int):
                raise TypeError(f"http.response.start 'status' must be an int, not {type(status).__name__}")
            head = worker.native.encode_head(status, message.get("headers") or ())
            self.started = True
            self.head = head
            # Usually the body follows at once and both go out as one record (with a
            # Content-Length). If the app pauses first, the head goes alone on the next
            # turn of the loop.
            # PERF: one loop callback per turn instead of one per response; with the direct
            # native.send below and no deque per request, worker_cpu noop went from 7.5 to
            # 6.4 CPU-µs per request (cargo bench -p uringapi-benches --bench worker_cpu).
            if not worker.unflushed:
                worker.loop.call_soon(worker._flush_heads)
            worker.unflushed.append(self)
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response completed")
            if self.disconnected:
                raise ClientDisconnected("the client has disconnected")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = as_bytes(body, "http.response.body 'body'")
            more = True if message.get("more_body", False) else False
            if self.flushing is not None:
                # Pieces must reach the ring in order: let the head go first.
                await self.flushing
                self.flushing = None
            head, self.head = self.head, None
            self.head_sent = True
            if self.window <= 0:
                await self._window_open()
            # Most bodies fit one slot and there is room: no need for the waiting loop.
            n = self.worker.native.send(self.key, head, body, 0, more)
            if n >= 0 and (more or n < len(body)):
                self.window -= 1  # a record with more to come
            if n < len(body):
                await self._write_rest(None if n >= 0 else head, body, more, max(n, 0))
            if not more:
                self._completed()
        elif kind == "http.response.pathsend":
            if not self.started:
                raise RuntimeError("http.response.pathsend sent before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.pathsend sent after the response completed")
            if self.disconnected:
                raise ClientDisconnected("the client has disconnected")
            # The spec asks for an absolute path, but Starlette's FileResponse passes on the
            # one it was given (`FileResponse("static/index.html")`), which the app means from
            # its working directory: joined to it here, as the front end's may differ (not
            # normalised: `..` after a symlink is the kernel's to resolve, as for open()).
            path = os.fsencode(message["path"])
            if not os.path.isabs(path):
                path = os.path.join(os.getcwdb(), path)
            if self.flushing is not None:
                await self.flushing
                self.flushing = None
            head, self.head = self.head, None
            self.head_sent = True
            while not self.worker.native.send_path(self.key, head, path):
                await self.worker.wait_space()
            self._completed()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an http scope")

    def _completed(self) -> None:
        """The last record is in the ring: only now may ``receive()`` say http.disconnect (said
        while that record waited for the window, Django's handler cancelled the send, and
        the response never ended)."""
        self.complete = True
        self._wake()

    async def _window_open(self) -> None:
        while self.window <= 0:
            if self.disconnected:
                raise ClientDisconnected("the client has disconnected")
            self.window_waiter = self.worker.loop.create_future()
            try:
                await self.window_waiter
            finally:
                self.window_waiter = None

    async def _write_rest(self, head: bytes | None, body: bytes, more: bool, offset: int) -> None:
        """Sends ``body[offset:]`` (after ``head``, if any) record by record, within the
        response window and waiting for space as needed."""
        send = self.worker.native.send
        while True:
            if self.window <= 0:
                await self._window_open()
            n = send(self.key, head, body, offset, more)
            if n >= 0:
                head = None
                offset += n
                done = offset >= len(body)
                if more or not done:
                    self.window -= 1
                if done:
                    return
            else:
                await self.worker.wait_space()

    def _flush_head(self) -> None:
        if self.head is None or self.disconnected:
            return
        head, self.head = self.head, None
        self.head_sent = True
        self.window -= 1  # the head goes alone, with more to come
        if self.worker.native.send(self.key, head, b"", 0, True) < 0:
            # No room right now: finish in a task that later sends wait for.
            self.flushing = self.worker.loop.create_task(self.worker.write(self.key, head, b"", True))

    async def run(self, app: Any) -> None:
        if self.claim and not self.worker.native.claim(self.key, self.claim):
            # Taken back while this worker's loop was blocked; it runs on another worker.
            self.worker.cycles.pop(self.key, None)
            return
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except _native.ChannelBroken as exc:
            # Seen by the app's send (or receive): no response can go out on this channel
            # any more, and an idle worker would not poll the ring again to notice.
            channel_broken(exc)
        except asyncio.CancelledError:
            if not self.head_sent and not self.disconnected:
                await self._error(500)
            raise
        except BaseException as exc:  # noqa: BLE001 - the app's failure becomes a 500 or a close
            if self.disconnected and (isinstance(exc, OSError) or _from_disconnect(exc)):
                # The client left mid-response, as clients do; uvicorn logs nothing either.
                logger.debug("the client left; the app ended with %r", exc)
                return
            logger.error("exception in ASGI application", exc_info=exc)
            if not self.head_sent and self.head is None and not self.disconnected:
                await self._error(500)
            elif not self.complete and not self.disconnected:
                await self._abort()
        else:
            if not self.started and not self.disconnected:
                logger.error("ASGI callable returned without starting a response")
                await self._error(500)
            elif not self.complete and not self.disconnected:
                logger.error("ASGI callable returned without completing the response")
                await self._abort()
        finally:
            self.worker.cycles.pop(self.key, None)
            if self.disconnected and not self.complete:
                # The front end may still wait on this stream (the client left mid-request):
                # end it. Dropped on the front end if it already gave the stream up.
                self.complete = True
                if not self.worker.native.abort(self.key):
                    self.worker.loop.create_task(self._abort_when_room())

    async def _abort_when_room(self) -> None:
        while not self.worker.native.abort(self.key):
            await self.worker.wait_space()

    async def _error(self, status: int) -> None:
        self.head = None
        self.head_sent = True
        self.complete = True
        self._wake()
        body = b"Internal Server Error"
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await self.worker.write(self.key, self.worker.native.encode_head(status, headers), body, False)

    async def _abort(self) -> None:
        self.complete = True
        self._wake()
        if self.head is not None:
            # The head was still buffered: nothing went out, so a 500 is still possible.
            await self._error(500)
            return
        while not self.worker.native.abort(self.key):
            await self.worker.wait_space()


class Worker:
    """Reads requests from the channels and runs the app for each."""

    def __init__(self, app: Any, native: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.native = native
        self.loop = loop
        self.cycles: dict[int, Cycle | WebSocketCycle] = {}
        self.polling = False
        self.space_waiters: list[asyncio.Future[None]] = []
        #: Cycles whose response head waits for its body; flushed alone on the next turn.
        self.unflushed: list[Cycle] = []
        #: An app that installed its own task factory (during lifespan startup) has its
        #: request tasks made by it.
        self.task_factory = loop.get_task_factory() is not None

    def start(self) -> None:
        self.loop.add_reader(self.native.doorbell_fd, self._on_doorbell)
        self._on_doorbell()

    def stop(self) -> None:
        self.loop.remove_reader(self.native.doorbell_fd)

    def _on_doorbell(self) -> None:
        self.native.awake()
        if not self.polling:
            self.polling = True
            self._poll()

    def _poll(self) -> None:
        try:
            events = self.native.drain()
        except _native.ChannelBroken as exc:
            channel_broken(exc)
        if events:
            self._dispatch(events)
        if self.space_waiters and self.native.has_space():
            self._wake_space()
        # No spinning on an empty ring. PERF: each extra round is a turn of the loop, and
        # uvloop makes an epoll_pwait syscall per turn (3 per request at hello's rate with
        # 32 rounds); sleeping at once and letting the front end ring took the workers' CPU
        # per request under hello from about 13 to 9 µs, fastapi-json about 72 to 68 (A/B
        # runs of `benches/e2e/run.py --servers uringapi --apps hello,fastapi-json`,
        # 2026-12-03).
        if self.native.prepare_sleep():
            self.loop.call_soon(self._poll)
        else:
            self.polling = False

    def _dispatch(self, events: list[tuple[Any, ...]]) -> None:
        cycles = self.cycles
        app, loop, task_factory, new_task = self.app, self.loop, self.task_factory, asyncio.Task
        for ev in events:
            kind = ev[0]
            if kind == EV_REQUEST:
                _, key, scope, body, more, claim, window = ev
                cycle = Cycle(self, key, scope, body, more, claim, window)
                cycles[key] = cycle
                coro = cycle.run(app)
                # PERF: see EAGER_TASKS and TASK_NAME (loop.create_task can do neither):
                # worker_cpu noop went from 5.5 to 4.6 CPU-µs per request on Python 3.12
                # and from 5.25 to 5.0 on 3.11 (cargo bench -p uringapi-benches --bench
                # worker_cpu [-- --python ...]).
                if task_factory:
                    cycle.task = loop.create_task(coro)
                elif EAGER_TASKS:
                    cycle.task = new_task(coro, loop=loop, eager_start=True)
                else:
                    cycle.task = new_task(coro, loop=loop, name=TASK_NAME)
            elif kind == EV_BODY:
                cycle = cycles.get(ev[1])
                if cycle is not None:
                    cycle.feed(ev[2], ev[3])  # type: ignore[call-arg]
            elif kind == EV_WS_MESSAGE:
                ws = cycles.get(ev[1])
                if isinstance(ws, WebSocketCycle):
                    ws.feed(ev[2], ev[3], ev[4], ev[5])
            elif kind == EV_WS_CREDIT:  # a WebSocket's or an HTTP response's send window
                cycle = cycles.get(ev[1])
                if cycle is not None:
                    cycle.credit(ev[2])
            elif kind == EV_WS_DISCONNECT:
                ws = cycles.get(ev[1])
                if isinstance(ws, WebSocketCycle):
                    ws.disconnect(ev[2], ev[3])
            elif kind == EV_WS_CONNECT:
                ws = WebSocketCycle(self, ev[1])
                cycles[ev[1]] = ws
                ws.start(self.app, ev[2])
            elif kind == EV_DISCONNECT:
                cycle = cycles.get(ev[1])
                if cycle is not None:
                    cycle.disconnect()
            elif kind == EV_CANCEL:
                cycle = cycles.get(ev[1])
                if cycle is not None and cycle.task is not None:
                    cycle.disconnected = True
                    cycle.task.cancel()

    def _flush_heads(self) -> None:
        cycles, self.unflushed = self.unflushed, []
        for cycle in cycles:
            try:
                cycle._flush_head()
            except _native.ChannelBroken as exc:
                channel_broken(exc)
            except Exception as exc:  # noqa: BLE001 - one bad head must not hold up the others
                logger.error("cannot send the response head", exc_info=exc)

    def _wake_space(self) -> None:
        self.native.space_done()
        waiters, self.space_waiters = self.space_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_space(self) -> None:
        if self.native.prepare_space_wait():
            await asyncio.sleep(0)
            return
        fut = self.loop.create_future()
        self.space_waiters.append(fut)
        await fut

    async def write(self, key: int, head: bytes | None, body: bytes, more: bool, offset: int = 0) -> None:
        """Sends ``body[offset:]`` (after ``head``, if any), waiting for space as needed."""
        send = self.native.send
        while True:
            n = send(key, head, body, offset, more)
            if n >= 0:
                head = None
                offset += n
                if offset >= len(body):
                    return
            await self.wait_space()

    async def drain_requests(self, timeout: float) -> None:
        # Open WebSockets never end by themselves: close them (1001, going away) and let
        # their apps see websocket.disconnect, then wait for every task as for requests.
        closing = [c.going_away() for c in list(self.cycles.values()) if isinstance(c, WebSocketCycle)]
        tasks = [c.task for c in self.cycles.values() if c.task is not None]
        tasks += [t for t in closing if t is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            # Left pending, they would be destroyed with the loop ("Task was destroyed but
            # it is pending!"): cancel them, so their apps see CancelledError and clean up.
            logger.warning("%d request(s) or WebSocket(s) still running when the graceful "
                           "timeout ended: cancelled", len(late))
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=1.0)


def channel_broken(exc: BaseException) -> NoReturn:
    """The shared memory no longer holds a valid channel: exit (70), so that the front end
    fails this worker's requests with 502 and starts a new one."""
    logger.critical("the channel to the front end is broken; exiting", exc_info=exc)
    os._exit(70)


def fail(error: str, hint: str) -> NoReturn:
    message = f"error: {error}\nhint: {hint}\n"
    status_fd = os.environ.get("URINGAPI_STATUS_FD")
    written = False
    if status_fd:
        try:
            os.write(int(status_fd), message.encode())
            written = True
        except OSError:
            pass
    if not written:
        sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(STARTUP_FAILED)


class UtcFormatter(logging.Formatter):
    """Times as the front end writes them (UTC, RFC 3339, microseconds), so that its lines
    and the workers' read as one log, whatever the local time zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def setup_logging(level: str) -> None:
    index = os.environ.get("URINGAPI_WORKER_INDEX", "?")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter(f"%(asctime)s %(levelname)s worker[{index}:{os.getpid()}] %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler])


async def serve(app: Any, native: Any, lifespan_mode: str, limit: StartupLimit) -> float:
    """Serves until stopped; returns when the graceful timeout ends (time.monotonic())."""
    loop = asyncio.get_running_loop()
    lifespan = Lifespan(app, lifespan_mode)
    try:
        await lifespan.startup(limit.left())
    except LifespanFailed as exc:
        if exc.timed_out:
            fail(f"the app's lifespan startup did not finish within {limit.seconds:g} s", STARTUP_HINT)
        # Starlette reports the whole traceback as the failure message: log it all, and
        # put its last line (the exception itself) in the one-line error.
        text = str(exc).strip()
        if "\n" in text:
            logger.error("lifespan startup failed:\n%s", text)
        summary = text.splitlines()[-1] if text else "lifespan.startup.failed"
        fail(f"the app's lifespan startup failed: {summary}", "fix the startup code (see the log above), or run with --lifespan off")
    native.set_state(lifespan.state)
    # The app's modules and what its startup built live as long as the worker: the
    # collector need not walk them again in every full collection (startup garbage is
    # collected first).
    # PERF: worker_cpu fastapi, ~52k requests: full collections took 172 ms of CPU without
    # this and 19 ms with it, about 3 µs per request; each one paused the loop for ~25 ms.
    gc.collect()
    gc.freeze()
    worker = Worker(app, native, loop)
    grace = float(os.environ.get("URINGAPI_GRACEFUL", "30"))
    sigterm = Sigterm(native, loop, grace)
    loop.add_signal_handler(signal.SIGTERM, sigterm)

    interval = float(os.environ.get("URINGAPI_HEARTBEAT", HEARTBEAT))

    def beat() -> None:
        native.beat(interval)
        # The front end stops a ready worker through shared memory alone (segment rule 4):
        # an app that reset SIGTERM's handler meanwhile neither dies of it nor stays up.
        if native.stop_requested() and not sigterm.stop.is_set():
            sigterm.stop.set()
        loop.call_later(interval, beat)

    def trim() -> None:
        # MEMORY: the response-slot pages a burst touched go back once the load is light
        # (protocol's SlotPool::trim; the front end does the same for request slots).
        # It reads the return ring, so it may be the first to see a broken channel.
        try:
            native.trim_slots()
        except _native.ChannelBroken as exc:
            channel_broken(exc)
        loop.call_later(TRIM_SLOTS_EVERY, trim)

    beat()
    loop.call_later(TRIM_SLOTS_EVERY, trim)
    worker.start()
    native.set_ready()
    # The loop runs the SIGTERM handler from here on, so a request to be replaced always
    # comes after `ready` (a SIGTERM before the handler was added ends the worker).
    await sigterm.stop.wait()
    # Once stopping, more SIGTERMs mean nothing (the front end SIGKILLs after the graceful
    # timeout), but one arriving after the loop dropped its handler would kill us half-way
    # through lifespan shutdown: ignore them from here on.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    worker.stop()
    # The front end says what is left of the graceful timeout: during its own shutdown it
    # has already waited for its connections (all of it, or none after a second signal).
    left = native.stop_grace()
    left = grace if left is None else left
    deadline = time.monotonic() + left
    await worker.drain_requests(timeout=left)
    await lifespan.shutdown(max(deadline - time.monotonic(), 0.0) + LIFESPAN_OVERTIME)
    await cancel_leftovers()
    return deadline


def keep_channel_fds(env: dict[str, str]) -> None:
    """The fds the front end handed over (shared memory, doorbells, status pipe) stay with
    this process: a program the app runs that inherits fds (os.system, subprocess with
    close_fds=False) would hold the shared memory after the server stopped. (A process the
    app forks without exec keeps them: fork copies every fd.)"""
    names = ("URINGAPI_SEGMENT_FD", "URINGAPI_DOORBELL_FD", "URINGAPI_STATUS_FD")
    for fd in [env.get(n, "") for n in names] + env.get("URINGAPI_THREAD_FDS", "").split(","):
        if fd.isdigit():
            try:
                os.set_inheritable(int(fd), False)
            except OSError:
                pass  # not open: attaching to the channel says so below


def main(env: dict[str, str] | None = None, uvloop_factory: Callable[[], Any] | None = None) -> None:
    env = dict(os.environ if env is None else env)
    setup_logging(env.get("URINGAPI_LOG_LEVEL", "INFO"))
    if env.get("URINGAPI_LOG_CONFIG"):
        try:
            apply_log_config(env["URINGAPI_LOG_CONFIG"])
        except StartupError as exc:
            fail(exc.error, exc.hint)
    # Ctrl-C (and Ctrl-\, SIGQUIT) reaches the whole process group; the front end decides
    # when workers stop. The front end's own control signals (SIGHUP rolling restart,
    # SIGTTIN/SIGTTOU, SIGUSR1 log reopen, SIGUSR2 which it only logs) may be sent to the
    # whole group too: they are not for workers.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    die_with_the_front_end()
    keep_channel_fds(env)
    # A worker whose loop stays stuck past --timeout gets SIGABRT first: print where it was.
    faulthandler.enable()
    app_dir = env.get("URINGAPI_APP_DIR") or os.getcwd()
    sys.path.insert(0, app_dir)
    spec = env.get("URINGAPI_APP", "uringapi.demo:app")
    limit = StartupLimit(float(env.get("URINGAPI_STARTUP_TIMEOUT", "0")))
    watch = limit.watch_import(spec, fail)
    try:
        app = import_app(spec, env.get("URINGAPI_FACTORY") == "1")
    except StartupError as exc:
        fail(exc.error, exc.hint)
    finally:
        if watch is not None:
            watch.cancel()
    try:
        native = _native.Worker(
            int(env["URINGAPI_SEGMENT_FD"]),
            int(env["URINGAPI_DOORBELL_FD"]),
            [int(fd) for fd in env["URINGAPI_THREAD_FDS"].split(",") if fd],
            env.get("URINGAPI_ROOT_PATH", ""),
            env.get("URINGAPI_UDS", ""),
        )
    except (KeyError, ValueError, _native.SegmentError) as exc:
        fail(f"this process was not started by the uringapi front end ({exc})", "start workers with `uringapi serve`, not directly")
    if uvloop_factory is None:
        import uvloop

        uvloop_factory = uvloop.new_event_loop
    loop = uvloop_factory()
    asyncio.set_event_loop(loop)
    try:
        deadline = loop.run_until_complete(serve(app, native, env.get("URINGAPI_LIFESPAN", "auto"), limit))
    finally:
        loop.close()
    bound_the_exit(deadline)


if __name__ == "__main__":
    main()
