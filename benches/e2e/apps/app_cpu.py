"""The app named by ``BENCH_APP_CPU_TARGET``, wrapped to measure its own CPU per request.

Server-agnostic: any ASGI server runs it. For each HTTP request the wrapper sums
``time.thread_time_ns()`` over the app's synchronous segments only: from the call to
the first ``send``/``receive``, and from each return of ``send``/``receive`` to the
next call or to the app's return. The time inside ``send``/``receive`` is the
server's, and while one of them is suspended the event loop may run other requests:
neither is counted. What is left is the app's own Python work (routing, validation,
serialisation), the same whichever server runs it.

Limits: an app that awaits anything else that suspends (a sleep, a lock, a thread
pool) would have the loop's other work counted in; the bench apps do not. The
wrapper's own clock reads add about 0.1 µs per segment.

Each worker process writes ``<pid> <requests> <ns>`` to
``$BENCH_APP_CPU_DIR/<pid>`` every ``FLUSH_S`` while it has traffic; the harness
sums the files before and after its measured window.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from time import thread_time_ns
from typing import Any

FLUSH_S = 0.05
_module, _, _attr = os.environ["BENCH_APP_CPU_TARGET"].partition(":")
inner = getattr(importlib.import_module(_module), _attr)
_out = Path(os.environ["BENCH_APP_CPU_DIR"]) / str(os.getpid())
_totals = [0, 0]  # requests, ns
_flushing = False


def _flush() -> None:
    tmp = _out.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()} {_totals[0]} {_totals[1]}\n")
    tmp.replace(_out)


def _periodic(loop: asyncio.AbstractEventLoop, seen: int) -> None:
    global _flushing
    _flush()
    if _totals[0] == seen:
        _flushing = False  # idle: the file is up to date; the next request restarts this
        return
    loop.call_later(FLUSH_S, _periodic, loop, _totals[0])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _flushing
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return
    spent = 0
    start = thread_time_ns()

    async def timed_send(message: Any) -> None:
        nonlocal spent, start
        spent += thread_time_ns() - start
        await send(message)
        start = thread_time_ns()

    async def timed_receive() -> Any:
        nonlocal spent, start
        spent += thread_time_ns() - start
        message = await receive()
        start = thread_time_ns()
        return message

    await inner(scope, timed_receive, timed_send)
    spent += thread_time_ns() - start
    _totals[0] += 1
    _totals[1] += spent
    if not _flushing:
        _flushing = True
        loop = asyncio.get_running_loop()
        loop.call_later(FLUSH_S, _periodic, loop, -1)
