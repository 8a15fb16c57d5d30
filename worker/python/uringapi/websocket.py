"""The ASGI ``websocket`` scope (spec 2.4) on a worker: one task per WebSocket, its
``receive``/``send``, and the two windows that keep its memory bounded.

The front end owns the protocol (handshake, framing, ping/pong, the close handshake, UTF-8
and size checks), so only whole, valid messages reach here, a slot-sized piece per record.
Backpressure both ways (``ring.rs`` rule 7 in the protocol crate): a client message's last
piece is handed back to the front end's window only when the app's ``receive()`` takes the
message, so a slow app stops the front end reading that socket; and ``send()`` keeps at
most ``WS_WINDOW`` records that the front end has not yet written to the client, so a
client that does not read holds the app's ``send()`` instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Any

from uringapi import _native
from uringapi.window import give_back

if TYPE_CHECKING:
    from uringapi.worker import Worker

logger = logging.getLogger("uringapi.error")

#: Records of one direction that may be unacknowledged (protocol/src/record.rs).
WS_WINDOW = _native.WS_WINDOW
#: Client messages taken before their credit goes back in a record of its own; fewer ride
#: on the app's next ``send`` (ring.rs rule 7).
WS_CREDIT_AT = _native.WS_CREDIT_AT

#: DENIED: a denial response (or the 403 of a close before accept) went out whole.
CONNECTING, ACCEPTED, RESPONSE, CLOSED, DENIED = range(5)

#: The first entry of a new WebSocket's ``messages``: ``websocket.connect``, not yet taken.
_CONNECT = (b"", False)

#: The name of every WebSocket's task (``start``).
TASK_NAME = "uringapi-websocket"

#: The context the done callback (``WebSocketCycle.__call__``) runs in: one for all WebSockets (``add_done_callback`` would
#: otherwise copy the current context for each, 64 bytes per open WebSocket); it reads no
#: context variable, and the tasks it starts copy this empty one.
_ENDED_CONTEXT = contextvars.Context()


class WebSocketDisconnected(OSError):
    """Raised by ``send()`` once the client has gone (Starlette turns an ``OSError`` there
    into ``WebSocketDisconnect``, as under uvicorn)."""


def _cut_reason(reason: str) -> bytes:
    """A close reason as UTF-8, cut at a character boundary to fit a control frame (with a
    warning: the client gets less than the app wrote)."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    cut = raw[:123].decode(errors="ignore").encode()
    logger.warning("websocket.close reason is %d bytes in UTF-8, past the 123 a close frame "
                   "holds (RFC 6455 §5.5); the client gets its first %d: %r", len(raw), len(cut),
                   cut.decode())
    return cut


def _close_code(message: dict[str, Any]) -> int:
    """The code of an app's ``websocket.close`` (1000 when none): one a close frame may
    carry, or ``ValueError`` (the app's task then ends and the client gets 1011)."""
    code = message.get("code") or 1000
    if not isinstance(code, int) or not (code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014
                                         or 3000 <= code <= 4999):
        raise ValueError(f"websocket.close code {code!r} may not be sent to a client (RFC 6455 "
                         "§7.4): use 1000-1003, 1007-1014 or 3000-4999")
    return int(code)


def as_bytes(value: Any, what: str) -> bytes:
    """An app's bytes (a body, a message) given as any bytes-like object, as bytes; anything
    else is the app's error, ``what`` naming the field (``bytes(5)`` would be five NULs)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _message_payload(message: dict[str, Any]) -> tuple[bytes, bool]:
    """A ``websocket.send``'s payload and whether it is text: exactly one of ``text`` (str)
    and ``bytes`` (bytes-like) is given (ASGI spec), else ``TypeError``."""
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise TypeError("websocket.send needs exactly one of 'text' and 'bytes'")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"websocket.send 'text' must be str, not {type(text).__name__}")
        return text.encode(), True
    return as_bytes(data, "websocket.send 'bytes'"), False


class WebSocketCycle:
    """One WebSocket: the app's task, the messages waiting for it, and its send window."""

    # MEMORY: 16 slots, 160 bytes per open WebSocket (21 were 208): the native channel
    # is the worker's, the connect waits as the first of `messages`, a message's text
    # flag rides in its `parts`, the close reason with its code, and a denial's end is a
    # state.
    __slots__ = (
        "worker", "key", "state", "messages", "parts", "closed", "client_gone", "waiter",
        "window", "window_waiter", "owed", "crediting", "head", "task", "disconnected",
        "send_lock",
    )

    def __init__(self, worker: Worker, key: int) -> None:
        self.worker = worker
        self.key = key
        self.state = CONNECTING
        #: Whole client messages the app has not taken yet: (data, text), None while there
        #: are none (an empty list is 72 bytes per idle WebSocket). A list, not a deque:
        #: the front end's window bounds it to WS_WINDOW, and an empty deque is 600 bytes.
        #: It starts with ``_CONNECT``, the ``websocket.connect`` the app takes first.
        self.messages: list[tuple[bytes, bool]] | None = [_CONNECT]
        #: A client message longer than a slot until its last piece arrives: its text
        #: flag, then its pieces.
        self.parts: list[Any] | None = None
        #: The code and reason (``""`` when none was given) ``receive()`` reports as
        #: ``websocket.disconnect`` once set.
        self.closed: tuple[int, str] | None = None
        #: The client side ended (the front end said so): nothing more can be sent.
        self.client_gone = False
        self.waiter: asyncio.Future[None] | None = None
        #: ``WsSend`` records the front end may still take before it acknowledges some.
        self.window = WS_WINDOW
        self.window_waiter: asyncio.Future[None] | None = None
        self.owed = 0
        self.crediting = False
        #: A denial response's encoded head, until its body goes with it.
        self.head: bytes | None = None
        self.task: asyncio.Task[None] | None = None
        #: Set by a cancel from the front end (shared with the http cycle's interface).
        self.disconnected = False
        #: Made by the first send that has to wait (``_lock``): an ``asyncio.Lock`` is 0.2
        #: KiB per idle WebSocket, and most sends never wait.
        self.send_lock: asyncio.Lock | None = None

    # ---- events from the front end ----
    def feed(self, data: bytes, text: bool, more: bool, credit: int = 0) -> None:
        if credit:
            # Sent records the front end wrote, carried by this message (ring.rs rule 7).
            self.credit(credit)
        if more:
            if self.parts is None:
                self.parts = [text]
            self.parts.append(data)
            # Copied into the message being assembled: the front end may send the next
            # piece (the whole message is bounded by --ws-max-size there).
            self._took()
            return
        if self.parts is not None:
            parts, self.parts = self.parts, None
            text = parts[0]
            parts[0] = b""
            parts.append(data)
            data = b"".join(parts)
        if self.state == CLOSED:
            self._took()  # the app closed; nobody will take it
            return
        if self.messages is None:
            self.messages = [(data, text)]
        else:
            self.messages.append((data, text))
        self._wake()

    def disconnect(self, code: int = 1006, reason: str = "") -> None:
        self.client_gone = True
        if self.closed is None:
            self.closed = (code, reason)
        self._wake()
        self._wake_window()

    def _took(self) -> None:
        """A client message (or piece) left the worker's buffer: its record goes back to the
        front end's window, on the app's next ``send`` or, once ``WS_CREDIT_AT`` are owed,
        in a record of its own."""
        # PERF: an echo costs two records instead of four and the front end is not woken
        # for a credit alone; with SendCredit riding on the client's next message too, a
        # 64-byte echo over 64 WebSockets (the bench cell's load, benchkit/wsload.py) went
        # from 26.7 to 22.8 server CPU-µs/msg, workers from 11.6 to 8.9 (medians of 5 runs
        # alternating with the previous build, shared 2-core machine, 2026-12-04).
        if self.crediting or self.owed + 1 >= WS_CREDIT_AT:
            give_back(self)
        else:
            self.owed += 1

    def credit(self, n: int) -> None:
        self.window += n
        self._wake_window()

    def going_away(self) -> asyncio.Task[None] | None:
        """The worker stops (SIGTERM, a rolling restart past its grace): close 1001. The
        close goes out at once when there is room (the worker may exit right after), else
        from the returned task, which the caller waits for."""
        task = None
        if self.state == ACCEPTED and not self.client_gone:
            self.state = CLOSED
            self.messages = None
            raw = _cut_reason("server shutting down")
            if not self.worker.native.ws_close(self.key, 1001, raw):
                task = self.worker.loop.create_task(self._send_close(1001, raw))
        self.disconnect(1001)
        return task

    async def _send_close(self, code: int, raw: bytes) -> None:
        while not self.worker.native.ws_close(self.key, code, raw):
            await self.worker.wait_space()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_window(self) -> None:
        if self.window_waiter is not None and not self.window_waiter.done():
            self.window_waiter.set_result(None)

    # ---- the ASGI callables ----
    async def receive(self) -> dict[str, Any]:
        # MEMORY: an idle WebSocket's app waits in this coroutine for its whole life, so
        # its frame is kept to two locals and a two-deep stack (the work is in `_next`):
        # 200 bytes instead of 232 (`sys.getsizeof` of the suspended coroutine, 3.11).
        while True:
            message = self._next()
            if message is not None:
                return message
            # `_wake` clears it once set; a cancelled wait leaves a done one behind, which
            # `_wake` skips and the next wait replaces.
            self.waiter = self.worker.loop.create_future()
            await self.waiter

    def _next(self) -> dict[str, Any] | None:
        """The event ``receive()`` returns now, or None when it has to wait."""
        messages = self.messages
        if messages:
            entry = messages.pop(0)
            if not messages:
                self.messages = None
            if entry is _CONNECT:
                return {"type": "websocket.connect"}
            data, text = entry
            self._took()
            if text:
                # The front end checked it is UTF-8 (1007 otherwise).
                return {"type": "websocket.receive", "text": data.decode()}
            return {"type": "websocket.receive", "bytes": data}
        closed = self.closed
        if closed is not None:
            return {"type": "websocket.disconnect", "code": closed[0], "reason": closed[1]}
        return None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if self.client_gone and self.state != CONNECTING:
                raise WebSocketDisconnected("the client has disconnected")
            if self.state != ACCEPTED:
                raise RuntimeError(f"websocket.send before websocket.accept or after websocket.close (state {self.state})")
            await self._send_message(*_message_payload(message))
        elif kind == "websocket.accept":
            if self.state != CONNECTING:
                raise RuntimeError("websocket.accept sent twice, or after a close or a response")
            headers = list(message.get("headers") or ())
            subprotocol = message.get("subprotocol")
            if subprotocol is not None:
                headers.append((b"sec-websocket-protocol", subprotocol.encode()))
            head = self.worker.native.encode_head(101, headers, True)
            self.state = ACCEPTED
            if self.client_gone:
                return
            while not self.worker.native.ws_accept(self.key, head):
                await self.worker.wait_space()
        elif kind == "websocket.close":
            if self.state == CONNECTING:
                # Closed before accept: the handshake is refused with 403 (ASGI spec).
                self.state = RESPONSE
                await self._respond(403, b"")
            elif self.state == ACCEPTED:
                await self._close(_close_code(message), message.get("reason") or "")
            else:
                raise RuntimeError("websocket.close after the websocket was closed or denied")
        elif kind == "websocket.http.response.start":
            if self.state != CONNECTING:
                raise RuntimeError("websocket.http.response.start after accept, close or another response")
            self.head = self.worker.native.encode_head(message["status"], message.get("headers") or ())
            self.state = RESPONSE
        elif kind == "websocket.http.response.body":
            if self.state != RESPONSE:
                raise RuntimeError("websocket.http.response.body without a response started, or after its end")
            body = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if not more:
                self.state = DENIED
            head, self.head = self.head, None
            await self.worker.write(self.key, head, as_bytes(body, f"{kind} 'body'"), more)
            if not more:
                self._denied()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a websocket scope")

    async def _send_message(self, payload: bytes, text: bool) -> None:
        offset = 0
        # PERF: with window and room, the message goes out without the lock (nothing can
        # interleave before the call returns), not through `asyncio.Lock`: an uncontended
        # `async with` cost 0.55–0.64 µs against 0.12–0.14 for the `locked()` check (timed
        # alone on uvloop, 200,000 rounds, 2026-12-04); the echo load of `_took` cannot
        # resolve that on the shared machine.
        lock = self.send_lock
        if self.window > 0 and not self.client_gone and (lock is None or not lock.locked()):
            carried = 0 if self.crediting else self.owed
            n = self.worker.native.ws_send(self.key, payload, text, 0, carried)
            if n >= 0:
                self.owed -= carried
                self.window -= 1
                if n >= len(payload):
                    return
                offset = n
        async with self._lock():
            while True:
                while self.window <= 0:
                    if self.client_gone:
                        raise WebSocketDisconnected("the client has disconnected")
                    self.window_waiter = self.worker.loop.create_future()
                    try:
                        await self.window_waiter
                    finally:
                        self.window_waiter = None
                if self.client_gone:
                    raise WebSocketDisconnected("the client has disconnected")
                carried = 0 if self.crediting else self.owed
                n = self.worker.native.ws_send(self.key, payload, text, offset, carried)
                if n < 0:
                    await self.worker.wait_space()
                    continue
                self.owed -= carried
                self.window -= 1
                offset += n
                if offset >= len(payload):
                    return

    def _lock(self) -> asyncio.Lock:
        if self.send_lock is None:
            self.send_lock = asyncio.Lock()
        return self.send_lock

    async def _close(self, code: int, reason: str) -> None:
        if self.state != ACCEPTED:
            return
        self.state = CLOSED
        self.messages = None
        if self.closed is None:
            self.closed = (code, "")
        self._wake()
        if self.client_gone:
            return
        raw = _cut_reason(reason)
        async with self._lock():
            while not self.worker.native.ws_close(self.key, code, raw):
                await self.worker.wait_space()

    async def _respond(self, status: int, body: bytes) -> None:
        self.state = DENIED
        headers = [(b"content-type", b"text/plain; charset=utf-8")] if body else []
        await self.worker.write(self.key, self.worker.native.encode_head(status, headers), body, False)
        self._denied()

    def _denied(self) -> None:
        """The handshake ended in a response instead of an accept: there is no WebSocket,
        so a ``receive()`` now (or waiting already) gets ``websocket.disconnect`` (1006, as
        under uvicorn), not a wait that would last as long as the worker: an app that loops
        on ``receive()`` after its close-before-accept ends."""
        self.disconnect(1006)

    def start(self, app: Any, scope: dict[str, Any]) -> None:
        """Runs the app as this WebSocket's task. The task runs the app's coroutine itself,
        with no coroutine of ours around it (248 bytes more per open WebSocket); how it
        ended is seen by the cycle itself, its done callback (``__call__``)."""
        worker = self.worker
        try:
            coro = app(scope, self.receive, self.send)
            # MEMORY: the task is named once for all (as request tasks, TASK_NAME in
            # worker.py): before 3.12 a default name ("Task-123") is a str made per task,
            # 64 bytes per open WebSocket. An app's own task factory makes it as it likes.
            if worker.task_factory:
                task = worker.loop.create_task(coro)
            else:
                task = asyncio.Task(coro, loop=worker.loop, name=TASK_NAME)
        except Exception as exc:  # noqa: BLE001 - not a coroutine, or it raised at once
            self._fail(exc)
            return
        self.task = task
        # MEMORY: the cycle is the callback, not a bound `self._ended` (64 bytes per open
        # WebSocket for the task's life).
        task.add_done_callback(self, context=_ENDED_CONTEXT)

    def __call__(self, task: asyncio.Task[None]) -> None:
        """The app's task ended (its done callback): see how, and end what it left open."""
        if task.cancelled():
            self.worker.cycles.pop(self.key, None)
            return
        exc = task.exception()
        if exc is None:
            if self.state == CONNECTING:
                logger.error("ASGI callable returned without sending handshake")
            self._then_finish(500, 1000)
        elif isinstance(exc, _native.ChannelBroken):
            from uringapi.worker import channel_broken

            channel_broken(exc)
        elif self.client_gone and isinstance(exc, OSError):
            self.worker.cycles.pop(self.key, None)
        else:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """The app's failure becomes a 500 or a 1011."""
        logger.error("exception in ASGI application", exc_info=exc)
        self._then_finish(500, 1011)

    def _then_finish(self, status: int, code: int) -> None:
        """Ends what the app left open from a task of its own (the shutdown waits for it);
        forgets the WebSocket at once when nothing is left open."""
        if self.state == CLOSED or self.state == DENIED or (
                self.state == ACCEPTED and self.client_gone):
            self.worker.cycles.pop(self.key, None)
            return
        self.task = self.worker.loop.create_task(self._finish_then_forget(status, code))

    async def _finish_then_forget(self, status: int, code: int) -> None:
        try:
            await self._finish(status, code)
        except _native.ChannelBroken as exc:
            from uringapi.worker import channel_broken

            channel_broken(exc)
        finally:
            self.worker.cycles.pop(self.key, None)

    async def _finish(self, status: int, code: int) -> None:
        """Ends whatever the app left open: no handshake → ``status``; accepted → close with
        ``code``; a denial response without its end → the end (or an abort if none went)."""
        if self.state == CONNECTING:
            self.state = RESPONSE
            await self._respond(status, b"Internal Server Error" if status == 500 else b"")
        elif self.state == ACCEPTED:
            await self._close(code, "")
        elif self.state == RESPONSE:
            self.state = DENIED
            head, self.head = self.head, None
            await self.worker.write(self.key, head, b"", False)
