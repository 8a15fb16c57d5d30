"""FastAPI WebSocket routes for tests/e2e/test_websocket_core.py: an echo with a few
commands, a denial, a failure before accept, and an HTTP route that reports the close code
the last echo saw."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

app = FastAPI()
last: dict[str, int | None] = {"code": None}
flood = {"sent": 0}
#: What receive() gave each /*-then-receive route after its denial.
after_denial: dict[str, dict] = {}


@app.get("/")
def root() -> dict[str, bool]:
    return {"ok": True}


@app.get("/last-close")
def last_close() -> dict[str, int | None]:
    return last


@app.get("/after-denial")
def after_denial_route() -> dict[str, dict]:
    return after_denial


@app.get("/flood-count")
def flood_count() -> dict[str, int]:
    return flood


@app.websocket("/flood")
async def flood_route(ws: WebSocket) -> None:
    """Sends 64 KiB messages as fast as send() lets it, counting them."""
    await ws.accept()
    chunk = b"f" * 65536
    while True:
        await ws.send_bytes(chunk)
        flood["sent"] += 1


@app.websocket("/sink")
async def sink(ws: WebSocket) -> None:
    """Accepts, receives nothing for 5 s, then reads until the client leaves."""
    await ws.accept()
    await asyncio.sleep(5)
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


@app.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    offered = ws.scope["subprotocols"]
    await ws.accept(subprotocol=offered[0] if offered else None, headers=[(b"x-echo", b"yes")])
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                last["code"] = msg["code"]
                return
            text = msg.get("text")
            if text is None:
                await ws.send_bytes(msg["bytes"])
            elif text.startswith("close:"):
                code, _, reason = text[len("close:"):].partition(":")
                await ws.close(int(code), reason)
                return
            elif text == "send-both":
                # An app's mistake: ASGI asks for exactly one of text and bytes.
                await ws.send({"type": "websocket.send", "text": "t", "bytes": b"b"})
            elif text == "pid":
                await ws.send_text(str(os.getpid()))
            elif text == "scope":
                s = ws.scope
                await ws.send_json({
                    "type": s["type"], "scheme": s["scheme"], "path": s["path"],
                    "raw_path": s["raw_path"].decode(), "query_string": s["query_string"].decode(),
                    "subprotocols": s["subprotocols"], "http_version": s["http_version"],
                    "spec_version": s["asgi"].get("spec_version"),
                    "extensions": sorted(s["extensions"]), "has_method": "method" in s,
                })
            else:
                await ws.send_text(text)
    except WebSocketDisconnect as exc:
        last["code"] = exc.code


@app.websocket("/deny")
async def deny(ws: WebSocket) -> None:
    await ws.close()


@app.websocket("/boom")
async def boom(ws: WebSocket) -> None:
    raise RuntimeError("boom before accept")


@app.websocket("/teapot")
async def teapot(ws: WebSocket) -> None:
    """A denial response with a body (the websocket.http.response extension)."""
    await ws.send_denial_response(PlainTextResponse("no tea here", status_code=418))


@app.websocket("/deny-then-receive")
async def deny_then_receive(ws: WebSocket) -> None:
    """Closes before accept (403), then asks for the next message, as an app whose
    receive loop outlives its handshake does."""
    await ws.close()
    after_denial["deny"] = await receive_past_connect(ws)


@app.websocket("/teapot-then-receive")
async def teapot_then_receive(ws: WebSocket) -> None:
    await ws.send_denial_response(PlainTextResponse("no tea here", status_code=418))
    after_denial["teapot"] = await receive_past_connect(ws)


async def receive_past_connect(ws: WebSocket) -> dict:
    """The first message that is not websocket.connect (Starlette denies without taking it)."""
    while (msg := await ws.receive())["type"] == "websocket.connect":
        pass
    return msg
