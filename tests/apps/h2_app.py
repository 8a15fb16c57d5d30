"""A Starlette app for the HTTP/2 tests: which worker answered, over which HTTP version,
bodies hashed as they stream in and out, and a handler that blocks its worker's loop.

  GET  /sleep?s=0.3        -> {"pid", "http_version", "started", "ended"} around asyncio.sleep(s)
                              (CLOCK_MONOTONIC, the same clock in every worker)
  GET  /block?s=3          -> {"pid"} after time.sleep(s): the worker's loop is stuck
  POST /upload             -> {"bytes", "sha256"} of the body, read as a stream
  GET  /download?n=N       -> N deterministic bytes, streamed in 64 KiB pieces
  GET  /headers            -> {"headers": [[name, value], ...]} as the app received them
  GET  /scope              -> {"client", "scheme", "http_version"} of the scope
  POST /late-read          -> "early " at once, then asks for the body (0.5 s at most), "done"
  GET  /bodiless?status=204 -> that status with content-length 9 and a 9-byte body in two
                              pieces, which the server must not send (HEAD, 204, 304 have none)
  GET  /two-lengths         -> content-length given twice, as 3 and 4: an invalid head
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

PIECE = 64 * 1024


def pattern(n: int) -> bytes:
    """The download's bytes: a repeated 251-byte cycle, so that the client can rebuild it."""
    cycle = bytes(range(251))
    return (cycle * (n // len(cycle) + 1))[:n]


async def sleep(request: Request) -> JSONResponse:
    started = time.monotonic()
    await asyncio.sleep(float(request.query_params.get("s", "0.3")))
    return JSONResponse({"pid": os.getpid(), "http_version": request.scope["http_version"],
                         "started": started, "ended": time.monotonic()})


async def block(request: Request) -> JSONResponse:
    time.sleep(float(request.query_params.get("s", "3")))
    return JSONResponse({"pid": os.getpid()})


async def upload(request: Request) -> JSONResponse:
    h = hashlib.sha256()
    n = 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return JSONResponse({"bytes": n, "sha256": h.hexdigest()})


async def download(request: Request) -> StreamingResponse:
    data = pattern(int(request.query_params.get("n", "0")))

    async def pieces():
        for i in range(0, len(data), PIECE):
            yield data[i:i + PIECE]

    return StreamingResponse(pieces(), media_type="application/octet-stream")


async def headers(request: Request) -> JSONResponse:
    return JSONResponse({"headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]]})


async def scope(request: Request) -> JSONResponse:
    s = request.scope
    return JSONResponse({"client": s["client"], "scheme": s["scheme"], "http_version": s["http_version"]})


class LateRead:
    """Answers before it asks for the body (raw ASGI: Starlette would read it first)."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early ", "more_body": True})
        try:
            await asyncio.wait_for(receive(), 0.5)
        except asyncio.TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b"done"})


class Bodiless:
    """A body on a status that has none: the app's mistake, the server's to drop."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        status = int(dict(p.split("=") for p in scope["query_string"].decode().split("&"))["status"])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"9"), (b"etag", b'"v1"')]})
        await send({"type": "http.response.body", "body": b"not ", "more_body": True})
        await send({"type": "http.response.body", "body": b"this!"})


class TwoLengths:
    """Content-length given twice with two values: a head the server must refuse."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"3"), (b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"abc"})


app = Starlette(routes=[
    Route("/bodiless", Bodiless()),
    Route("/two-lengths", TwoLengths()),
    Route("/late-read", LateRead(), methods=["POST"]),
    Route("/scope", scope),
    Route("/headers", headers),
    Route("/sleep", sleep),
    Route("/block", block),
    Route("/upload", upload, methods=["POST"]),
    Route("/download", download),
])
