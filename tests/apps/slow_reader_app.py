"""An app that reads its request body slowly: at most `rate` bytes a second (query
parameter, default 100 MiB/s), taking one ``receive()`` message at a time, and answers with
what it got: byte count, SHA-256, message count, and the largest and smallest non-final
message bodies. GET / answers "ok" (the readiness probe)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope["query_string"].decode())
    rate = float(query.get("rate", [str(100 << 20)])[0])
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    count = messages = 0
    largest, smallest = 0, None
    start = loop.time()
    more = scope["method"] == "POST"
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        digest.update(body)
        count += len(body)
        messages += 1
        largest = max(largest, len(body))
        if more:
            smallest = len(body) if smallest is None else min(smallest, len(body))
        # Behind schedule or on it: sleep until `count` bytes are due at `rate`.
        due = start + count / rate
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
    out = json.dumps({"bytes": count, "sha256": digest.hexdigest(), "messages": messages,
                      "largest": largest, "smallest": smallest}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
