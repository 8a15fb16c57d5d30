"""The FastAPI WebSocket test app (tests/e2e/test_websocket_*.py): the shared endpoints of
ws_handlers.py, one FastAPI-style route with a query parameter and WebSocketDisconnect, a
lifespan that puts `greeting` into the state, and plain HTTP routes beside them."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

import ws_handlers
from events import record


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"greeting": "hello"}


app = FastAPI(lifespan=lifespan)

for path, endpoint in ws_handlers.ROUTES.items():
    app.add_api_websocket_route(path, endpoint)


@app.websocket("/ws/chat/{room}")
async def chat(websocket: WebSocket, room: str, name: str = "anon") -> None:
    """Answers each text message with the room and the name from the query string."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "name": name, "text": text})
    except WebSocketDisconnect as e:
        record("ws-disconnect", websocket.query_params.get("tag", "-"), e.code,
               (e.reason or "-").replace(" ", "_"))


@app.get("/")
async def root() -> dict:
    return {"app": "ws_fastapi"}


@app.get("/plain")
async def plain() -> dict:
    return {"plain": True}
