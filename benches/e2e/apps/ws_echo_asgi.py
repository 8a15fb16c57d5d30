"""Plain ASGI WebSocket echo for the WebSocket cell (benchkit/websocket.py): every message
goes back as it came, text as text, bytes as bytes. ``GET /`` answers ``ws echo`` over
plain HTTP, for the harness's readiness check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
BODY = b"ws echo"
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE: Message = {"type": "http.response.body", "body": BODY}
ACCEPT: Message = {"type": "websocket.accept"}


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await receive()  # websocket.connect
        await send(ACCEPT)
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif kind == "http":
        await send(START)
        await send(RESPONSE)
    elif kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
