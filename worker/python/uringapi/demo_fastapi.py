"""The `make demo` app (needs FastAPI): why the front end and the workers are separate.

`/block` blocks its worker's event loop for two seconds, the way a sync database driver or
a CPU-heavy handler does by mistake. Under a server that runs the app's loop beside the
network (or pins a connection to a worker), every request on that loop waits. Here the
front end sees the stalled worker and sends `/fast` to the other one:

    curl -s localhost:8000/block &  curl -s -w ' %{time_total}s\n' localhost:8000/fast
    curl -s localhost:9100/metrics | grep -E 'stall|requests_total'

`/ws` echoes WebSocket messages (framing, pings and close handshakes in the front end):

    python -m websockets ws://localhost:8000/ws
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI(title="uringapi demo")


@app.get("/")
async def index() -> dict[str, object]:
    return {
        "worker_pid": os.getpid(),
        "try": ["/fast", "/block", "ws://127.0.0.1:8000/ws", "http://127.0.0.1:9100/metrics"],
    }


@app.get("/fast")
async def fast() -> dict[str, object]:
    return {"fast": True, "worker_pid": os.getpid()}


@app.get("/block")
async def block(seconds: float = 2.0) -> dict[str, object]:
    # Deliberately blocks the event loop (an `async def` that never awaits).
    time.sleep(min(max(seconds, 0.0), 10.0))
    return {"blocked_for": seconds, "worker_pid": os.getpid()}


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return
