"""FastAPI app with one endpoint that blocks its event loop.

- ``GET /fast``: ``{"message": "Hello, world!"}``, a normal async handler.
- ``GET /block``: ``time.sleep(0.05)`` inside ``async def``, then ``{"blocked_ms": 50}``.
  The sleep holds the worker's event loop for 50 ms: every other request on that
  worker waits. This is the classic FastAPI production mistake (a blocking client
  library or CPU work called from an async handler), kept on purpose.

The harness's "blocking endpoint" scenario sends a few requests per second to
``/block`` and measures ``/fast`` latency: a server that pins each connection to
one worker makes the fast requests on a blocked worker wait; one that routes each
request to a worker that is free does not.
"""

from __future__ import annotations

import time

from fastapi import FastAPI

BLOCK_SECONDS = 0.05
app = FastAPI()


@app.get("/fast")
async def fast() -> dict[str, str]:
    return {"message": "Hello, world!"}


@app.get("/block")
async def block() -> dict[str, int]:
    time.sleep(BLOCK_SECONDS)  # deliberately blocking: see the module docstring
    return {"blocked_ms": round(BLOCK_SECONDS * 1000)}
