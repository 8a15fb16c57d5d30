"""The Starlette WebSocket test app (tests/e2e/test_websocket_*.py): the shared endpoints
of ws_handlers.py as WebSocketRoutes, one WebSocketEndpoint class, a lifespan that puts
`greeting` into the state, and plain HTTP routes beside them."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import ws_handlers
from events import record


class Chat(WebSocketEndpoint):
    """Answers each text message with the room from the path."""

    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        room = websocket.path_params["room"]
        name = websocket.query_params.get("name", "anon")
        await websocket.send_json({"room": room, "name": name, "text": data})

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        record("ws-disconnect", websocket.query_params.get("tag", "-"), close_code, "-")


async def root(request: Request) -> JSONResponse:
    return JSONResponse({"app": "ws_starlette"})


async def plain(request: Request) -> JSONResponse:
    return JSONResponse({"plain": True})


@asynccontextmanager
async def lifespan(app: Starlette):
    yield {"greeting": "hello"}


app = Starlette(
    routes=[
        Route("/", root),
        Route("/plain", plain),
        WebSocketRoute("/ws/chat/{room}", Chat),
        *(WebSocketRoute(path, endpoint) for path, endpoint in ws_handlers.ROUTES.items()),
    ],
    lifespan=lifespan,
)
