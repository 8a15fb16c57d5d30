"""The built-in demo app served by ``uringapi serve`` with no app named: plain ASGI."""

import os

PAGE = b"Hello from uringapi! This response was written by Python worker pid %d into shared memory.\n"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo" and scope["method"] == "POST":
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": bytes(body)})
        return
    status = 200 if scope["path"] == "/" else 404
    body = PAGE % os.getpid() if status == 200 else b"Not Found\n"
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})
