"""A plain ASGI app whose handlers misbehave the way real user code can: it exits, it
segfaults, it scribbles over the worker's shared-memory segment, and it reads its
request body (or has its response read) slowly. Served by
tests/e2e/test_misbehaving_workers.py; nothing here knows about uringapi except that
/scribble finds its segment through URINGAPI_SEGMENT_FD.

Routes (query parameters in brackets):
  GET  /pid [s]            {"pid", "index"} of the worker, after sleeping s seconds
  GET  /sleep [s]          records "sleep-start", sleeps s seconds (default 1), {"pid", "index"}
  GET  /hold release [max] records "hold-start", waits until the file `release` exists
                           (at most max seconds, default 30), {"pid", "index", "released"}
  GET  /exit [pid, hold]   os._exit(1) inside the handler (after blocking the whole
                           interpreter for hold seconds, when hold > 0)
  GET  /segv [pid]         a real segfault: reads address 0 through ctypes
  GET  /scribble [pid, hold]
                           overwrites the worker's whole memfd segment with random bytes,
                           then (hold > 0) blocks the whole interpreter for hold seconds
                           so that the worker cannot notice the damage itself, then
                           answers 200
  GET  /slow [n, chunk, once]
                           n pseudo-random bytes (random.Random(n).randbytes(n)), streamed
                           in `chunk`-byte pieces (chunked), or as one body with a
                           Content-Length when once=1
  GET  /wrong-length declared sent [pieces]
                           a Content-Length of `declared` and `sent` bytes of "z" in
                           `pieces` body messages (default 1)
  GET  /big-head size      one response header whose value is `size` bytes of "h"
  POST /slowread [delay]   reads the body with asyncio.sleep(delay) between receive()
                           calls; answers {"sha256", "bytes", "chunks", "max_chunk"}
  GET  /fork-helper [s]    starts a helper process with multiprocessing's fork start
                           method (it inherits every fd of the worker), which sleeps s
                           seconds (default 60); {"pid", "index", "helper"}
  GET  /fork-and-continue  os.fork(), and the child carries on in the handler as if it were
                           the worker (it answers the request); the parent answers after
                           the child has ended: {"pid", "index", "child", "child_status"}
                           (the child's exit status)
  GET  /child-fds          runs `ls -l /proc/self/fd` as a child that keeps every
                           inheritable fd (subprocess, close_fds=False); its output

The crashing routes take an optional pid: if it is given and is not this worker's pid,
they answer 409 with {"pid", "index"} instead of misbehaving, so that a test can aim a
crash at one particular worker. Before misbehaving they record "<route> <pid>" in
URINGAPI_TEST_EVENT_LOG (when set), so a test knows which worker it hit; /scribble
also records "scribbled <pid>" once the segment is overwritten.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import mmap
import multiprocessing
import os
import random
import subprocess
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

import events  # noqa: E402

INDEX = os.environ.get("URINGAPI_WORKER_INDEX", "?")


def record(event: str) -> None:
    events.record(event, INDEX)


def payload(n: int) -> bytes:
    """The bytes /slow sends for size n; tests compute the same."""
    return random.Random(n).randbytes(n)


def scribble_segment() -> int:
    """Overwrites every byte of this worker's shared-memory segment with random bytes."""
    fd = int(os.environ["URINGAPI_SEGMENT_FD"])
    size = os.fstat(fd).st_size
    mm = mmap.mmap(fd, 0)  # MAP_SHARED, read/write; the seals forbid resizing only
    try:
        assert len(mm) == size
        step = 1 << 20
        for off in range(0, size, step):
            n = min(step, size - off)
            mm[off:off + n] = os.urandom(n)
    finally:
        mm.close()
    return size


async def respond(send: Send, status: int, body: bytes,
                  content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "index": INDEX}


async def app(scope: dict, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    path, method = scope["path"], scope["method"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}

    def num(name: str, default: float) -> float:
        return float(query.get(name, default))

    if path in ("/exit", "/segv", "/scribble"):
        if "pid" in query and int(query["pid"]) != os.getpid():
            await respond(send, 409, json.dumps(whoami()).encode())
            return
        record(path[1:])
        if path == "/exit":
            if num("hold", 0) > 0:
                time.sleep(num("hold", 0))  # requests sent meanwhile wait in the ring
            os._exit(1)
        if path == "/segv":
            ctypes.string_at(0)  # SIGSEGV: a read of address 0
            os._exit(99)  # unreachable; makes a missing segfault visible as exit 99
        size = scribble_segment()
        record("scribbled")
        hold = num("hold", 0)
        if hold > 0:
            time.sleep(hold)  # blocks the loop: no polls, no heartbeat, no send
        await respond(send, 200, json.dumps({"scribbled": size, **whoami()}).encode())
        return

    if path == "/fork-helper":
        helper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(num("s", 60),))
        helper.start()
        await respond(send, 200, json.dumps({**whoami(), "helper": helper.pid}).encode())
        return
    if path == "/fork-and-continue":
        child = os.fork()
        if child == 0:
            await respond(send, 200, json.dumps({"from": "child", **whoami()}).encode())
            os._exit(0)  # reached only if the worker let the child use its channel
        deadline = time.monotonic() + 30
        while (ended := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        status = os.waitstatus_to_exitcode(ended[1]) if ended[0] else None
        await respond(send, 200, json.dumps(
            {"from": "parent", **whoami(), "child": child, "child_status": status}).encode())
        return
    if path == "/child-fds":
        out = subprocess.run(["ls", "-l", "/proc/self/fd"], close_fds=False, capture_output=True)
        await respond(send, 200, out.stdout)
        return

    if path == "/pid":
        await asyncio.sleep(num("s", 0))
        await respond(send, 200, json.dumps(whoami()).encode())
    elif path == "/hold":
        # In flight until the test creates the file `release` (or `max` seconds pass):
        # a request that is certainly still running while something else happens.
        record("hold-start")
        release, deadline = query["release"], time.monotonic() + num("max", 30)
        while not os.path.exists(release) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        body = {**whoami(), "released": os.path.exists(release)}
        await respond(send, 200, json.dumps(body).encode())
    elif path == "/sleep":
        record("sleep-start")
        await asyncio.sleep(num("s", 1))
        await respond(send, 200, json.dumps(whoami()).encode())
    elif path == "/slow" and method == "GET":
        n = int(query.get("n", 8 << 20))
        chunk = int(query.get("chunk", 256 << 10))
        data = payload(n)
        if query.get("once") == "1":
            await respond(send, 200, data, b"application/octet-stream")
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        view = memoryview(data)
        for off in range(0, n, chunk):
            await send({"type": "http.response.body", "body": bytes(view[off:off + chunk]),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/wrong-length":
        declared, sent = int(query["declared"]), int(query["sent"])
        pieces = int(query.get("pieces", 1))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(declared).encode())]})
        step = -(-sent // pieces)
        for off in range(0, sent, step):
            last = off + step >= sent
            await send({"type": "http.response.body", "body": b"z" * min(step, sent - off),
                        "more_body": not last})
    elif path == "/big-head":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-big", b"h" * int(query["size"])),
                                (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/slowread" and method == "POST":
        delay = num("delay", 0.01)
        h = hashlib.sha256()
        total = chunks = max_chunk = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            h.update(body)
            total += len(body)
            chunks += 1
            max_chunk = max(max_chunk, len(body))
            if not message.get("more_body", False):
                break
            await asyncio.sleep(delay)
        await respond(send, 200, json.dumps({"sha256": h.hexdigest(), "bytes": total,
                                             "chunks": chunks, "max_chunk": max_chunk}).encode())
    else:
        await respond(send, 404, b'{"detail": "not found"}')
