"""An ASGI app that shows what the TLS tests need: the scheme, the ASGI tls extension
(bytes-free, JSON-ready) and the request body it read.

  GET/POST any path  -> {"scheme", "tls" (scope["extensions"]["tls"] or null), "body"}
"""

from __future__ import annotations

import json


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
        if not message.get("more_body"):
            break
    tls = scope.get("extensions", {}).get("tls")
    answer = json.dumps({
        "scheme": scope["scheme"],
        "tls": tls,
        "body": body.decode("latin-1"),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
