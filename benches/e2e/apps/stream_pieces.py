"""Streams a response in pieces as fast as the app can send them, for the response-window
A/B (benches/e2e/stream_window_ab.py): GET /big?k=N sends N pieces of 1 MiB, GET /small?k=N
sends N pieces of 100 bytes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

BIG = b"x" * (1 << 20)
SMALL = b"y" * 100


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    k = int(parse_qs(scope["query_string"].decode()).get("k", ["1"])[0])
    piece = BIG if scope["path"] == "/big" else SMALL
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for _ in range(k):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
