"""Plain ASGI app: ``GET /`` answers a 10 KiB body.

Same handler cost as ``hello_asgi``; the difference shows the cost of moving
response bytes (through shared memory, for uringapi).
"""

from __future__ import annotations

from hello_asgi import Receive, Scope, Send, handle_lifespan

BODY_SIZE = 10 * 1024
# Printable and deterministic, so a mismatch is easy to see in a capture.
BODY = (b"0123456789abcdef" * (BODY_SIZE // 16))[:BODY_SIZE]
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(BODY_SIZE).encode()),
    ],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return
    await send(START)
    await send(RESPONSE)
