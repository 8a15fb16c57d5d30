"""A plain ASGI app for the operational tests (tests/e2e/test_operations.py): it tells which
worker process answered, blocks its own event loop, sleeps without blocking (and notes being
cancelled), streams a response that then hangs, waits for the client to leave, and shows the
request headers it received. Nothing here knows about uringapi.

What happens inside the worker goes to URINGAPI_TEST_EVENT_LOG through events.record():
"<event> <pid> [token]", so that a test can see it after the response is gone.

Routes (query parameters in brackets; `tag` is copied into the event lines):
  GET /pid [s, tag]       records "pid-start", awaits asyncio.sleep(s) (default 0), answers
                          {"pid", "index"}
  GET /block [s, tag]     records "block-start", then time.sleep(s): the whole event loop stops
                          (no other request, no heartbeat); records "block-end", answers
                          {"pid", "index"}
  GET /sleep [s, tag]     records "sleep-start", awaits asyncio.sleep(s) (default 2); records
                          "sleep-cancelled" if the task is cancelled, else "sleep-end";
                          answers {"pid", "index"}
  GET /hold release [max, tag]
                          records "hold-start", waits until the file `release` exists (at most
                          `max` seconds, default 30), records "hold-end", answers
                          {"pid", "index", "released"}
  GET /stream [s, tag]    sends the response head and a first chunk (no Content-Length), then
                          awaits asyncio.sleep(s) (default 10) before the rest; records
                          "stream-started", then "stream-cancelled" or "stream-end"
  GET /headers            {"pid", "headers": [[name, value], ...]} as the app received them
  GET /thread [tag]       starts a non-daemon thread named "poller-<tag>" that never ends (a
                          background poller started without daemon=True), answers {"pid"}
  GET /leave [tag]        starts a task that polls for ever (fire-and-forget background
                          work) and answers {"pid"}; the task records "left-cleanup" in its
                          finally block
  GET /set-sigterm [to]   sets this worker's SIGTERM handler, as an app or library may: `ign`
                          (default) SIG_IGN, `dfl` SIG_DFL (the signal kills), `own` a
                          handler of its own that does nothing
  GET /orphan             runs `sh -c 'sleep 0.1 &'`: the shell exits at once and its
                          background child, an orphan, is re-parented to the namespace's PID 1
  POST /wait-disconnect [tag]
                          reads the whole body, records "wait-start", then awaits receive()
                          until it returns http.disconnect, records "disconnect-seen", and
                          ends without a response
Lifespan: records "startup" and "shutdown".
Import: while the file named by URINGAPI_TEST_IMPORT_HOLD exists, a worker importing this
module records "import-held" and sleeps (at most 30 s): a worker still starting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

import events

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

INDEX = os.environ.get("URINGAPI_WORKER_INDEX", "?")

_hold = os.environ.get("URINGAPI_TEST_IMPORT_HOLD")
if _hold and os.path.exists(_hold):
    events.record("import-held")
    for _ in range(300):
        if not os.path.exists(_hold):
            break
        time.sleep(0.1)


#: The tasks /leave started (kept, so that they are not collected).
LEFT: set[asyncio.Task] = set()


async def poll_for_ever(tag: str) -> None:
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        events.record("left-cleanup", tag)


def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "index": INDEX}


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            events.record("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            events.record("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client left before its body was read")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def app(scope: dict, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    assert scope["type"] == "http"
    path, method = scope["path"], scope["method"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    tag = query.get("tag", "-")

    def seconds(default: float) -> float:
        return float(query.get("s", default))

    if path == "/pid":
        events.record("pid-start", tag)
        await asyncio.sleep(seconds(0))
        await respond(send, 200, whoami())
    elif path == "/block":
        events.record("block-start", tag)
        time.sleep(seconds(2))  # on purpose: the event loop stops
        events.record("block-end", tag)
        await respond(send, 200, whoami())
    elif path == "/sleep":
        events.record("sleep-start", tag)
        try:
            await asyncio.sleep(seconds(2))
        except asyncio.CancelledError:
            events.record("sleep-cancelled", tag)
            raise
        events.record("sleep-end", tag)
        await respond(send, 200, whoami())
    elif path == "/hold":
        events.record("hold-start", tag)
        release, deadline = query["release"], time.monotonic() + float(query.get("max", 30))
        while not os.path.exists(release) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        events.record("hold-end", tag)
        await respond(send, 200, {**whoami(), "released": os.path.exists(release)})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
        events.record("stream-started", tag)
        try:
            await asyncio.sleep(seconds(10))
        except asyncio.CancelledError:
            events.record("stream-cancelled", tag)
            raise
        events.record("stream-end", tag)
        await send({"type": "http.response.body", "body": b"last chunk\n"})
    elif path == "/headers":
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        await respond(send, 200, {**whoami(), "headers": headers})
    elif path == "/set-sigterm":
        handlers = {"ign": signal.SIG_IGN, "dfl": signal.SIG_DFL, "own": lambda *_: None}
        signal.signal(signal.SIGTERM, handlers[query.get("to", "ign")])
        await respond(send, 200, whoami())
    elif path == "/orphan":
        subprocess.run(["sh", "-c", "sleep 0.1 &"], check=True)
        await respond(send, 200, whoami())
    elif path == "/thread":
        threading.Thread(target=lambda: time.sleep(3600), name=f"poller-{tag}").start()
        await respond(send, 200, whoami())
    elif path == "/leave":
        LEFT.add(asyncio.get_running_loop().create_task(poll_for_ever(tag)))
        await respond(send, 200, whoami())
    elif path == "/wait-disconnect" and method == "POST":
        await read_body(receive)
        events.record("wait-start", tag)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                events.record("disconnect-seen", tag)
                return
    else:
        await respond(send, 404, {"detail": "not found"})
