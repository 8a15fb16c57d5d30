"""A FastAPI application written the way users write them, served by the e2e tests.

Nothing here knows about uringapi. The only test hook is `record()`: when the
environment variable URINGAPI_TEST_EVENT_LOG names a file, lifespan startup and
shutdown and the start of /sleep append "<event> <pid>" lines to it, so a test can
see what each worker process did (O_APPEND keeps lines from several processes whole).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from events import record


def deterministic_bytes(size: int) -> bytes:
    """sha256(b"0") + sha256(b"1") + ... cut to `size`: no period, so reordered or
    repeated blocks anywhere in the body change the bytes."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(blocks))[:size]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
    record("startup")
    yield {"started_at": time.time(), "token": "lifespan-ok"}
    record("shutdown")


app = FastAPI(title="uringapi e2e app", lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/json")
async def json_hello() -> dict:
    return {"message": "hello"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None, limit: int = 10) -> dict:
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items")
async def create_item(item: Item) -> Item:
    return item


@app.get("/boom")
async def boom() -> dict:
    raise RuntimeError("boom: raised by the app on purpose")


@app.get("/stream")
async def stream(n: int = 100) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/stream-fail")
async def stream_fail(n: int = 5) -> StreamingResponse:
    """Sends n chunks, then fails: the response has started, so the client must see
    an aborted body, never a clean end of the chunked stream."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)
        raise RuntimeError("stream-fail: raised mid-body on purpose")

    return StreamingResponse(chunks(), media_type="text/plain")


@app.post("/echo")
async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(
        content=body,
        media_type="application/octet-stream",
        headers={
            "x-body-sha256": hashlib.sha256(body).hexdigest(),
            "x-body-length": str(len(body)),
        },
    )


@app.get("/big")
async def big(size: int) -> Response:
    body = deterministic_bytes(size)
    return Response(
        content=body,
        media_type="application/octet-stream",
        headers={"x-body-sha256": hashlib.sha256(body).hexdigest()},
    )


@app.get("/sleep")
async def sleep(s: float = 0.5) -> dict:
    start = time.monotonic()
    record("sleep-start")
    await asyncio.sleep(s)
    return {"start": start, "end": time.monotonic(), "pid": os.getpid()}


@app.get("/pid")
async def pid() -> dict:
    return {"pid": os.getpid()}


@app.get("/state")
async def state(request: Request) -> dict:
    return {
        "token": request.state.token,
        "started_at": request.state.started_at,
        "pid": os.getpid(),
    }


@app.get("/headers")
async def headers(request: Request, response: Response) -> dict:
    """Echoes the request headers in order and sets two cookies plus a custom header."""
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    response.headers["x-custom"] = "custom-value"
    return {"headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw]}


@app.get("/status/{code}")
async def status(code: int) -> Response:
    return Response(status_code=code)


@app.api_route("/scope", methods=["GET", "POST"])
@app.api_route("/scope/{tail:path}", methods=["GET", "POST"])
async def scope(request: Request) -> dict:
    """The parts of the ASGI scope the server builds, made JSON-safe (bytes as latin-1)."""
    s = request.scope

    def text(value: object) -> object:
        return value.decode("latin-1") if isinstance(value, bytes) else value

    return {
        "type": s["type"],
        "asgi": s.get("asgi"),
        "http_version": s["http_version"],
        "method": s["method"],
        "scheme": s.get("scheme"),
        "path": s["path"],
        "raw_path": text(s.get("raw_path")),
        "query_string": text(s["query_string"]),
        "root_path": s.get("root_path"),
        "headers": [[text(k), text(v)] for k, v in s["headers"]],
        "client": list(s["client"]) if s.get("client") else None,
        "server": list(s["server"]) if s.get("server") else None,
        "has_state": "state" in s,
    }
