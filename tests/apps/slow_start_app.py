"""A plain ASGI app whose lifespan startup never ends in worker 1 (an app waiting for a
database that does not answer) and completes in the others. Each lifespan shutdown appends
"shutdown <pid>" to URINGAPI_TEST_EVENT_LOG."""

import asyncio
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("URINGAPI_WORKER_INDEX") == "1":
                    await asyncio.sleep(3600)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with open(os.environ["URINGAPI_TEST_EVENT_LOG"], "a") as f:
                    f.write(f"shutdown {os.getpid()}\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
