"""Plain ASGI WebSocket app for benches/e2e/ws_burst_ab.py. ``?push=N``: the app sends N
text messages of 64 bytes as fast as ``send`` returns, then closes (a ticker, a broadcast,
tokens streamed to a browser). ``?pull=N``: it receives until the client sends ``done``,
then answers with how many it got (a client streaming events in). ``GET /`` answers
``ok``."""

from __future__ import annotations

from typing import Any

MESSAGE = "x" * 64


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    mode, _, n = scope["query_string"].decode().partition("=")
    if mode == "push":
        for _ in range(int(n)):
            await send({"type": "websocket.send", "text": MESSAGE})
        await send({"type": "websocket.close", "code": 1000})
        return
    count = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "done":
            await send({"type": "websocket.send", "text": str(count)})
        else:
            count += 1
