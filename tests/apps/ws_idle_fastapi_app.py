"""The README's FastAPI WebSocket echo route, for tests/e2e/test_idle_websockets.py."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        pass


@app.get("/")
async def root() -> dict:
    return {"app": "ws_idle_fastapi"}
