"""A plain ASGI app (standard library only) for check_smoke.py: it tells which interpreter
runs it and echoes a request body, streamed back in pieces."""

from __future__ import annotations

import hashlib
import json
import platform
import sys


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if scope["path"] == "/echo":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(0, len(body), 10_000):
            await send({"type": "http.response.body", "body": body[i:i + 10_000],
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    info = json.dumps({"python": platform.python_version(), "executable": sys.executable,
                       "sha256": hashlib.sha256(body).hexdigest()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(info)).encode())]})
    await send({"type": "http.response.body", "body": info})
