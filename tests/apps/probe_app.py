"""A plain ASGI app that reports what the server handed it, and that misbehaves in each of the
ways the ASGI HTTP spec lets a server notice. Served by tests/e2e/test_asgi_differential.py
under uvicorn and under uringapi, which compares the two; nothing here knows either server.

What the app sees goes back in the response (JSON) or, for what happens after the response
is gone, into URINGAPI_TEST_EVENT_LOG through events.record(): "<event> <pid> <probe> <detail>".

Routes (query parameters in brackets):
  ANY  /record/...        reads the whole body, then answers {"scope", "messages", "body_sha256"}:
                          the scope's shape (see scope_record) and every message receive()
                          returned (type, keys, more_body, body length)
  GET  /fixed [n]         n bytes ("x"), one body message, with Content-Length
  GET  /stream [chunks, size, cl]
                          `chunks` body messages of `size` bytes each ("a", "b", ...) with
                          more_body, then an empty final one; no Content-Length unless cl=1
  GET  /stream-listen [chunks, size]  streams like /stream while a second task waits in
                                      receive() for http.disconnect (as Litestar's Stream and
                                      older Starlette do); returns once that task saw it,
                                      recording "listener" and "returned"
  GET  /raise-before-start            raises before sending anything
  GET  /raise-after-start [flush]     sends start (no Content-Length), raises
  GET  /raise-after-body              sends start and one body chunk (more_body), raises
  GET  /return-before-start           returns without sending anything
  GET  /return-incomplete             sends start and a body chunk with more_body, returns
  GET  /body-before-start             sends http.response.body first
  GET  /start-twice [flush]           sends http.response.start twice
  GET  /send-after-complete           a complete response, then one more body message
  GET  /str-header-name               http.response.start with a str header name, then a
                                      body (ASGI: header names are byte strings)
  GET  /crlf-header-value             http.response.start with a header value holding CR LF
                                      and a second header (a response-splitting attempt)
  GET  /bad-header-name               http.response.start with a space in a header name
  GET  /bad-status?status=S           http.response.start with status S (an int, or the
                                      str "200" for S=str): 1xx and 600+ are no final status
  GET  /bad-body?body=B               a start, then http.response.body whose body is not
                                      bytes: the int 5 (B=int) or the str "ok" (B=str)
  GET  /disconnect-after-complete     a complete response, then receive() once more
  POST /wait-disconnect               reads the body, records "body-done", waits for
                                      http.disconnect, records it, then tries to send
A probe that misbehaves records "sent <pid> <probe> <outcome>" for each send() that a
server may refuse, outcome being "ok" or "raised:<Class>:<oserror|other>"; the exception
is then re-raised, as an app would let it propagate. flush=1 waits a moment after the
first start so that the head has certainly left the app before the violation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

import events

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

START_PLAIN = {"type": "http.response.start", "status": 200,
               "headers": [(b"content-type", b"text/plain")]}


class ProbeError(Exception):
    """Raised by the app on purpose."""


def latin1(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


def address_shape(addr: Any) -> Any:
    """An address tuple without its port number (ports differ from run to run)."""
    if addr is None:
        return None
    items = list(addr)
    return {"container": type(addr).__name__, "len": len(items),
            "types": [type(x).__name__ for x in items], "host": items[0] if items else None}


def scope_record(scope: dict) -> dict:
    headers = list(scope.get("headers", []))
    state = scope.get("state")
    return {
        "keys": sorted(scope),
        "type": scope["type"],
        "asgi": dict(scope.get("asgi", {})),
        "http_version": scope.get("http_version"),
        "method": scope.get("method"),
        "scheme": scope.get("scheme"),
        "path": scope.get("path"),
        "path_type": type(scope.get("path")).__name__,
        "raw_path": latin1(scope.get("raw_path")),
        "raw_path_type": type(scope.get("raw_path")).__name__,
        "query_string": latin1(scope.get("query_string")),
        "query_string_type": type(scope.get("query_string")).__name__,
        "root_path": scope.get("root_path"),
        "headers": [[latin1(k), latin1(v)] for k, v in headers],
        "header_types": sorted({f"{type(k).__name__},{type(v).__name__}" for k, v in headers}),
        "client": address_shape(scope.get("client")),
        "server": address_shape(scope.get("server")),
        "extensions": (None if scope.get("extensions") is None
                       else {k: sorted(v) if isinstance(v, dict) else repr(v)
                             for k, v in scope["extensions"].items()}),
        "state": None if state is None else {k: state[k] for k in sorted(state)},
    }


def message_record(message: dict) -> dict:
    return {"type": message["type"], "keys": sorted(message),
            "more_body": message.get("more_body"),
            "body_len": len(message["body"]) if "body" in message else None}


async def read_all(receive: Receive, seen: list[dict]) -> bytes:
    body = []
    while True:
        message = await receive()
        seen.append(message_record(message))
        if message["type"] != "http.request":
            break
        body.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(body)


async def respond_json(send: Send, value: Any) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def checked_send(send: Send, probe: str, message: dict) -> None:
    """send() for a message the server may refuse: records the outcome, re-raises."""
    try:
        await send(message)
    except BaseException as exc:
        kind = "oserror" if isinstance(exc, OSError) else "other"
        events.record("sent", probe, f"raised:{type(exc).__name__}:{kind}")
        raise
    events.record("sent", probe, "ok")


async def lifespan(receive: Receive, send: Send, scope: dict) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["probe"] = "lifespan-state"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send, scope)
        return
    assert scope["type"] == "http", scope["type"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    root, path = scope.get("root_path", ""), scope["path"]
    if root and path.startswith(root):
        path = path[len(root):]
    probe = path.strip("/").split("/")[0]
    flush = query.get("flush") == "1"

    if probe == "record":
        seen: list[dict] = []
        body = await read_all(receive, seen)
        await respond_json(send, {"scope": scope_record(scope), "messages": seen,
                                  "body_sha256": hashlib.sha256(body).hexdigest()})
    elif probe == "fixed":
        n = int(query.get("n", 10))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(n).encode())]})
        await send({"type": "http.response.body", "body": b"x" * n})
    elif probe == "stream":
        chunks, size = int(query.get("chunks", 3)), int(query.get("size", 5))
        headers = [(b"content-type", b"text/plain")]
        if query.get("cl") == "1":
            headers.append((b"content-length", str(chunks * size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(chunks):
            piece = bytes([ord("a") + i % 26]) * size
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif probe == "stream-listen":
        chunks, size = int(query.get("chunks", 3)), int(query.get("size", 5))

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    events.record("listener", probe, message["type"])
                    return

        listener = asyncio.ensure_future(listen())
        await send(START_PLAIN)
        await asyncio.sleep(0.05)  # the listener takes the request message and waits again
        for i in range(chunks):
            piece = bytes([ord("a") + i % 26]) * size
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await listener
        events.record("returned", probe)
    elif probe == "raise-before-start":
        raise ProbeError(probe)
    elif probe == "raise-after-start":
        await send(START_PLAIN)
        if flush:
            await asyncio.sleep(0.05)
        raise ProbeError(probe)
    elif probe == "raise-after-body":
        await send(START_PLAIN)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise ProbeError(probe)
    elif probe == "return-before-start":
        return
    elif probe == "return-incomplete":
        await send(START_PLAIN)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        return
    elif probe == "body-before-start":
        await checked_send(send, probe, {"type": "http.response.body", "body": b"early"})
    elif probe == "start-twice":
        await send(START_PLAIN)
        if flush:
            await asyncio.sleep(0.05)
        await checked_send(send, probe, START_PLAIN)
    elif probe == "str-header-name":
        await checked_send(send, probe, {"type": "http.response.start", "status": 200,
                                         "headers": [("x-str", b"value")]})
        await checked_send(send, probe + "-body", {"type": "http.response.body", "body": b"ok"})
    elif probe in ("crlf-header-value", "bad-header-name"):
        header = ((b"x-split", b"a\r\nx-injected: 1") if probe == "crlf-header-value"
                  else (b"bad name", b"v"))
        await checked_send(send, probe, {"type": "http.response.start", "status": 200,
                                         "headers": [header]})
        await checked_send(send, probe + "-body", {"type": "http.response.body", "body": b"ok"})
    elif probe == "bad-status":
        raw = query.get("status", "103")
        status = "200" if raw == "str" else int(raw)
        await checked_send(send, probe, {"type": "http.response.start", "status": status,
                                         "headers": [(b"content-length", b"2")]})
        await checked_send(send, probe + "-body", {"type": "http.response.body", "body": b"ok"})
    elif probe == "bad-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = 5 if query.get("body") == "int" else "ok"
        await checked_send(send, probe, {"type": "http.response.body", "body": body})
    elif probe == "send-after-complete":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})
        await checked_send(send, probe, {"type": "http.response.body", "body": b"late"})
    elif probe == "disconnect-after-complete":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})
        message = await receive()
        events.record("received", probe, message["type"], ",".join(sorted(message)))
    elif probe == "wait-disconnect":
        seen = []
        await read_all(receive, seen)
        events.record("body-done", probe)
        message = await receive()
        events.record("received", probe, message["type"], ",".join(sorted(message)))
        try:
            await send(START_PLAIN)
            await send({"type": "http.response.body", "body": b"too late"})
        except BaseException as exc:
            kind = "oserror" if isinstance(exc, OSError) else "other"
            events.record("sent", probe, f"raised:{type(exc).__name__}:{kind}")
            raise
        events.record("sent", probe, "ok")
    else:
        body = b"no such probe"
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
