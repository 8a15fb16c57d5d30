"""Plain ASGI WebSocket app for tests/e2e/test_websocket_bursts.py: ``/burst?n=N&seed=S``
accepts, sends the N messages of ``messages(n, seed)`` as fast as ``send`` returns, then
closes with 1000 ``done``. ``GET /`` answers ``ok`` for the harness's readiness check."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs

SLOT = 65536  # the default --slot-size: a longer message goes out as several records


def messages(n: int, seed: int) -> list[str | bytes]:
    """Mostly small messages, text and binary mixed, with some of a few KiB, some just
    under and over 16 KiB (the front end's joining threshold), empty ones, and now and
    then one longer than a slot; text carries two- and three-byte UTF-8 characters."""
    rng = random.Random(seed)
    out: list[str | bytes] = []
    for i in range(n):
        pick = rng.random()
        if pick < 0.02:
            size = SLOT + rng.randrange(1, 3 * SLOT)
        elif pick < 0.10:
            size = 16 * 1024 + rng.randrange(-64, 64)
        elif pick < 0.25:
            size = rng.randrange(1, 8192)
        elif pick < 0.30:
            size = 0
        else:
            size = rng.randrange(1, 200)
        if rng.random() < 0.5:
            unit = ("é€a" * (size // 6 + 1))[: max(size // 2, 0)]
            out.append(f"{i}:{unit}")
        else:
            out.append(rng.randbytes(size))
    return out


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = message["type"].replace(".startup", ".startup.complete").replace(".shutdown", ".shutdown.complete")
            await send({"type": done})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    query = parse_qs(scope["query_string"].decode())
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    for message in messages(int(query["n"][0]), int(query["seed"][0])):
        if isinstance(message, str):
            await send({"type": "websocket.send", "text": message})
        else:
            await send({"type": "websocket.send", "bytes": message})
    await send({"type": "websocket.close", "code": 1000, "reason": "done"})
