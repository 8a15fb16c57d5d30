"""WebSocket endpoints shared by the FastAPI and Starlette WebSocket test apps
(ws_fastapi_app.py, ws_starlette_app.py): each takes a Starlette `WebSocket`, which both
frameworks hand to their routes. What the app sees that a client cannot (the close code
of a client's close, how far a flood got) goes to the event log (events.py) as
"ws-<event> <pid> <tag> ..." lines; `tag` is the `tag` query parameter.
"""

from __future__ import annotations

import os

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from events import record

#: Subprotocols the app speaks, best first: it picks the first of these the client offered.
SUBPROTOCOLS = ("chat.v2", "chat.v1")
FLOOD_CHUNK = 64 * 1024


def choose_subprotocol(ws: WebSocket) -> str | None:
    offered = ws.scope.get("subprotocols") or []
    return next((p for p in SUBPROTOCOLS if p in offered), None)


def tag_of(ws: WebSocket) -> str:
    return ws.query_params.get("tag", "-")


async def echo_loop(ws: WebSocket) -> None:
    """Sends every message back as it came (text as text, bytes as bytes) until the client
    leaves; logs the close code and reason the app was given."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            reason = message.get("reason") or ""
            record("ws-disconnect", tag_of(ws), message.get("code"), reason.replace(" ", "_") or "-")
            return
        if message.get("text") is not None:
            await ws.send_text(message["text"])
        else:
            await ws.send_bytes(message["bytes"])


async def echo(ws: WebSocket) -> None:
    await ws.accept(subprotocol=choose_subprotocol(ws))
    await echo_loop(ws)


async def with_headers(ws: WebSocket) -> None:
    """Accepts with extra response headers, then echoes."""
    await ws.accept(headers=[(b"x-ws-extra", b"yes"), (b"set-cookie", b"ws-session=abc")])
    await echo_loop(ws)


async def pid(ws: WebSocket) -> None:
    """Tells the client which worker process holds the socket, then echoes."""
    await ws.accept()
    await ws.send_text(str(os.getpid()))
    await echo_loop(ws)


async def server_close(ws: WebSocket) -> None:
    """Accepts, sends one message, then closes with the code and reason asked for."""
    await ws.accept()
    await ws.send_text("closing")
    code = int(ws.query_params.get("code", "1000"))
    await ws.close(code=code, reason=ws.query_params.get("reason", ""))


async def deny(ws: WebSocket) -> None:
    """Closes before accepting: the server must answer the handshake with 403."""
    await ws.close()


async def deny_with_body(ws: WebSocket) -> None:
    """The denial-response extension: an HTTP response of the app's own instead of 101."""
    await ws.send_denial_response(PlainTextResponse(
        "no entry: token missing", status_code=401, headers={"x-denied": "token"}))


async def scope(ws: WebSocket) -> None:
    """Accepts and sends the parts of its scope a test can compare with what it sent."""
    await ws.accept(subprotocol=choose_subprotocol(ws))
    s = ws.scope
    await ws.send_json({
        "type": s["type"],
        "scheme": s.get("scheme"),
        "http_version": s.get("http_version"),
        "path": s["path"],
        "raw_path": (s.get("raw_path") or b"").decode("latin-1"),
        "query_string": s["query_string"].decode("latin-1"),
        "root_path": s.get("root_path"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]],
        "subprotocols": list(s.get("subprotocols") or []),
        "client": list(s["client"]) if s.get("client") else None,
        "server": list(s["server"]) if s.get("server") else None,
        "state_greeting": (s.get("state") or {}).get("greeting"),
        "denial_extension": "websocket.http.response" in (s.get("extensions") or {}),
    })
    await echo_loop(ws)


async def flood(ws: WebSocket) -> None:
    """Sends 64 KiB messages until sending fails (a client that never reads must not make
    the server buffer without bound); logs how many bytes were sent and how it ended."""
    await ws.accept()
    chunk = b"f" * FLOOD_CHUNK
    sent = 0
    try:
        while True:
            await ws.send_bytes(chunk)
            sent += len(chunk)
    except Exception as e:  # noqa: BLE001 - the kind of failure is what gets logged
        record("ws-flood-end", tag_of(ws), sent, type(e).__name__)
        return


async def raise_after_accept(ws: WebSocket) -> None:
    await ws.accept()
    raise RuntimeError("app failed after accept")


async def raise_before_accept(ws: WebSocket) -> None:
    raise RuntimeError("app failed before accept")


async def receive_until_disconnect(ws: WebSocket) -> None:
    """For framework-style handlers: receive_text until WebSocketDisconnect."""
    await ws.accept()
    try:
        while True:
            await ws.send_text(f"got {await ws.receive_text()}")
    except WebSocketDisconnect as e:
        record("ws-disconnect", tag_of(ws), e.code, (e.reason or "-").replace(" ", "_"))


ROUTES = {
    "/ws/echo": echo,
    "/ws/headers": with_headers,
    "/ws/pid": pid,
    "/ws/close": server_close,
    "/ws/deny": deny,
    "/ws/deny-body": deny_with_body,
    "/ws/scope": scope,
    "/ws/flood": flood,
    "/ws/raise-after-accept": raise_after_accept,
    "/ws/raise-before-accept": raise_before_accept,
}
