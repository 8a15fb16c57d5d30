"""Apps that answer while their request body is still coming in (full duplex), as an echo,
a transform or a proxy does: the server must go on handing the body to the app after the
response has started. Served by tests/e2e/test_full_duplex.py.

  app          plain ASGI. POST /echo starts its response (200, chunked) at once, then sends
               every body message back as it arrives; when the body ends it ends the
               response. POST /early answers 401 at once and never reads the body. An
               http.disconnect is recorded in URINGAPI_TEST_EVENT_LOG as
               "disconnect <pid> <body bytes seen>".
  fastapi_app  the same echo as an unmodified FastAPI route: a StreamingResponse over
               `request.stream()`.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

import events

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/early":
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"denied"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            events.record("disconnect", seen)
            return
        body = message.get("body", b"")
        seen += len(body)
        more = message.get("more_body", False)
        if body or not more:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return


fastapi_app = FastAPI()


@fastapi_app.post("/echo")
async def echo(request: Request) -> StreamingResponse:
    async def pieces() -> AsyncIterator[bytes]:
        async for piece in request.stream():
            yield piece

    return StreamingResponse(pieces(), media_type="application/octet-stream")
