"""A plain ASGI app for the command-line tests: answers with an environment variable (after
a second at /slow), and a factory that builds it (`--factory`)."""

import asyncio
import logging
import os

log = logging.getLogger("env_app")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    log.warning("served %s", scope["path"])
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    body = os.environ.get("GREETING", "unset").encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def create_app():
    os.environ["GREETING"] = "factory:" + os.environ.get("GREETING", "unset")
    return app
