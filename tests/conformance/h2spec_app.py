"""The app h2spec and the h2 conformance suite (check_h2.py) talk to: reads the request body
to its end and answers 200. The body is "ok"; `?n=N` makes it N bytes of "x" (for the flow
control cases); `/echo` answers JSON with the request's headers and body length as the app
saw them."""

from __future__ import annotations

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
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    if scope["path"] == "/echo":
        body = json.dumps({
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": size, "method": scope["method"], "http_version": scope["http_version"],
        }).encode()
    else:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        body = b"x" * int(query["n"][0]) if "n" in query else b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
