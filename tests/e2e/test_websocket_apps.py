"""FastAPI and Starlette WebSocket apps (tests/apps/ws_*_app.py) behind a real server,
driven by the `websockets` client: the ASGI websocket scope, accept with a subprotocol and
headers, echo of small and large messages, ping/pong, close codes in both directions,
close before accept (403), the denial-response extension, app exceptions, many sockets
at once beside plain HTTP, and the `--ws-*` flags.

URINGAPI_TEST_SERVER=uvicorn runs the same tests against uvicorn (websockets backend), to
show that they are right (wsserver.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import rawhttp
import wsraw
from harness import ServerFactory
from wsserver import GUARD, WsServer, new_tag, run, start

MiB = 1 << 20


@pytest.fixture(scope="module", params=["fastapi", "starlette"])
def app_server(request: pytest.FixtureRequest, servers: ServerFactory,
               tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    """One server per framework, shared by the module: 1 worker, 1 thread."""
    return start(servers, tmp_path_factory.mktemp("ws-apps"), request.param)


@pytest.fixture(scope="module")
def fastapi_w2t2(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-w2t2"), "fastapi", workers=2, threads=2)


def random_text(n_bytes: int, seed: int) -> str:
    """Text of about n_bytes UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters, so that a
    frame or read boundary can fall inside a character."""
    rng = random.Random(seed)
    alphabet = "abcdefghij KLMNOP 0123456789 é ü ß ж λ 中 文 € ✓ 😀 🚀"
    pieces, size = [], 0
    while size < n_bytes:
        word = "".join(rng.choice(alphabet) for _ in range(64))
        pieces.append(word)
        size += len(word.encode())
    return "".join(pieces)


# ---------------------------------------------------------------------------------------
# accept: subprotocols, headers, scope


@pytest.mark.parametrize("offered, chosen", [
    (["chat.v1", "chat.v2"], "chat.v2"),  # the app's preference wins, not the client's order
    (["chat.v1"], "chat.v1"),
    (["graphql-ws"], None),  # nothing in common: accepted without a subprotocol
    (None, None),
])
def test_subprotocol_choice(app_server: WsServer, offered: list[str] | None,
                            chosen: str | None) -> None:
    async def client() -> None:
        async with connect(app_server.url("/ws/echo"), subprotocols=offered) as ws:
            assert ws.subprotocol == chosen
            assert ws.response.headers.get("Sec-WebSocket-Protocol") == chosen
            await ws.send("hi")
            assert await ws.recv() == "hi"
    run(client())


def test_accept_headers_reach_the_client(app_server: WsServer) -> None:
    async def client() -> None:
        async with connect(app_server.url("/ws/headers")) as ws:
            assert ws.response.status_code == 101
            assert ws.response.headers["x-ws-extra"] == "yes"
            assert ws.response.headers["set-cookie"] == "ws-session=abc"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
    run(client())


def test_scope_carries_the_request(app_server: WsServer) -> None:
    async def client() -> dict:
        async with connect(app_server.url("/ws/scope?x=1&y=%20z"), subprotocols=["chat.v1", "b"],
                           additional_headers={"X-Custom": "custom-value"}) as ws:
            scope = json.loads(await ws.recv())
            local = ws.local_address
        return scope | {"local": list(local)}

    s = run(client())
    assert s["type"] == "websocket"
    assert s["scheme"] == "ws"
    assert s["http_version"] == "1.1"
    assert s["path"] == "/ws/scope"
    assert s["raw_path"] == "/ws/scope"
    assert s["query_string"] == "x=1&y=%20z"
    assert s["root_path"] == ""
    assert s["subprotocols"] == ["chat.v1", "b"]
    headers = {k: v for k, v in s["headers"]}
    assert all(k == k.lower() for k in headers), s["headers"]
    assert headers["x-custom"] == "custom-value"
    assert headers["upgrade"].lower() == "websocket"
    assert headers["sec-websocket-version"] == "13"
    assert headers["sec-websocket-protocol"].replace(" ", "") == "chat.v1,b"
    assert s["client"] == s["local"]
    assert s["server"] == [app_server.host, app_server.port]
    assert s["state_greeting"] == "hello"  # the lifespan's state reaches the websocket scope
    assert s["denial_extension"] is True


def test_framework_route_with_path_and_query_parameters(app_server: WsServer) -> None:
    tag = new_tag()

    async def client() -> list[dict]:
        async with connect(app_server.url(f"/ws/chat/lobby?name=ada&tag={tag}")) as ws:
            got = []
            for text in ("hello", "wörld"):
                await ws.send(text)
                got.append(json.loads(await ws.recv()))
            await ws.close(code=1000)
            return got

    assert run(client()) == [{"room": "lobby", "name": "ada", "text": "hello"},
                             {"room": "lobby", "name": "ada", "text": "wörld"}]
    assert app_server.events.wait("ws-disconnect", tag)[3] == "1000"


# ---------------------------------------------------------------------------------------
# messages


def test_small_messages_keep_their_type_and_order(app_server: WsServer) -> None:
    messages = ["", "a", b"", b"\xff\x00", "ünïcödé ✓ 😀", bytes(range(256)), "x" * 125,
                "y" * 126, b"z" * 65535, b"w" * 65536]

    async def client() -> list:
        async with connect(app_server.url("/ws/echo")) as ws:
            for m in messages:  # all sent before any is read: order must hold
                await ws.send(m)
            return [await ws.recv() for _ in messages]

    assert run(client()) == messages


def test_one_mib_binary_echo(app_server: WsServer) -> None:
    payload = os.urandom(MiB)

    async def client() -> bytes:
        async with connect(app_server.url("/ws/echo"), max_size=None) as ws:
            await ws.send(payload)
            return await ws.recv()

    assert run(client()) == payload


def test_five_mb_text_echo(app_server: WsServer) -> None:
    text = random_text(5_000_000, seed=5)
    assert len(text.encode()) >= 5_000_000

    async def client() -> str:
        async with connect(app_server.url("/ws/echo"), max_size=None) as ws:
            await ws.send(text)
            return await ws.recv()

    got = run(client())
    assert isinstance(got, str) and got == text


def test_fragmented_message_is_reassembled(app_server: WsServer) -> None:
    """The client sends one text message in fragments that split multi-byte characters;
    the app must see (and echo) one message."""
    text = random_text(200_000, seed=7)
    raw = text.encode()
    cuts = sorted(random.Random(3).sample(range(1, len(raw)), 40))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    with wsraw.connect(app_server.host, app_server.port, "/ws/echo", timeout=GUARD) as c:
        for i, piece in enumerate(pieces):
            opcode = wsraw.TEXT if i == 0 else wsraw.CONT
            c.send(wsraw.encode(opcode, piece, fin=i == len(pieces) - 1))
        got = bytearray()
        while True:
            frame = c.read_frame()
            assert frame.opcode in (wsraw.TEXT, wsraw.CONT), frame.opcode
            got += frame.payload
            if frame.fin:
                break
        assert bytes(got) == raw


def test_ping_pong(app_server: WsServer) -> None:
    async def client() -> None:
        async with connect(app_server.url("/ws/echo")) as ws:
            for payload in (b"", b"ping-1", os.urandom(125)):
                pong = await ws.ping(payload)
                await asyncio.wait_for(pong, GUARD)  # resolves on a pong with this payload
            await ws.send("after pings")
            assert await ws.recv() == "after pings"
    run(client())


def test_ping_between_fragments_is_answered_in_place(app_server: WsServer) -> None:
    """RFC 6455 §5.4: a control frame may come between the fragments of a message; the pong
    comes back at once, the message is whole afterwards."""
    with wsraw.connect(app_server.host, app_server.port, "/ws/echo", timeout=GUARD) as c:
        c.send(wsraw.encode(wsraw.TEXT, b"first half, ", fin=False))
        c.send(wsraw.encode(wsraw.PING, b"mid"))
        pong = c.read_frame()
        assert (pong.opcode, pong.payload) == (wsraw.PONG, b"mid")
        c.send(wsraw.encode(wsraw.CONT, b"second half", fin=True))
        frame = c.read_frame()
        assert (frame.opcode, frame.fin, frame.payload) == (wsraw.TEXT, True,
                                                            b"first half, second half")


# ---------------------------------------------------------------------------------------
# closing


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "going away"),
                                          (4321, "client bye"), (3000, "ü" * 40)])
def test_client_close_code_reaches_the_app(app_server: WsServer, code: int, reason: str) -> None:
    tag = new_tag()

    async def client() -> None:
        async with connect(app_server.url(f"/ws/echo?tag={tag}")) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(code=code, reason=reason)
            rcvd = ws.protocol.close_rcvd  # the server echoes the close code
            assert rcvd is not None and rcvd.code == code

    run(client())
    line = app_server.events.wait("ws-disconnect", tag)
    assert line[3] == str(code), line
    assert line[4] == (reason.replace(" ", "_") or "-"), line


@pytest.mark.parametrize("code, reason", [(1000, ""), (4001, "bye now"), (1008, "policy ✓")])
def test_server_close_code_and_reason_reach_the_client(app_server: WsServer, code: int,
                                                       reason: str) -> None:
    async def client() -> tuple[int, str]:
        from urllib.parse import quote
        async with connect(app_server.url(f"/ws/close?code={code}&reason={quote(reason)}")) as ws:
            assert await ws.recv() == "closing"
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd is not None
        return e.value.rcvd.code, e.value.rcvd.reason

    assert run(client()) == (code, reason)


def test_close_before_accept_is_403(app_server: WsServer) -> None:
    async def client() -> None:
        with pytest.raises(InvalidStatus) as e:
            async with connect(app_server.url("/ws/deny")):
                pass
        assert e.value.response.status_code == 403
        assert "sec-websocket-accept" not in e.value.response.headers
    run(client())


def test_denial_response_with_a_body(app_server: WsServer) -> None:
    async def client() -> None:
        with pytest.raises(InvalidStatus) as e:
            async with connect(app_server.url("/ws/deny-body")):
                pass
        r = e.value.response
        assert r.status_code == 401
        assert r.headers["x-denied"] == "token"
        assert r.headers["content-type"].startswith("text/plain")
        assert r.body == b"no entry: token missing"
    run(client())


@pytest.mark.uringapi_only  # uvicorn drops TCP without a close frame: the client sees 1006
def test_app_exception_after_accept_closes_with_1011(app_server: WsServer) -> None:
    """RFC 6455 §7.4.1: 1011, the server met a condition it could not handle; a close frame
    rather than a dropped connection, so the client learns it was not the network."""
    async def client() -> None:
        async with connect(app_server.url("/ws/raise-after-accept")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1011
    run(client())


def test_app_exception_before_accept_is_500(app_server: WsServer) -> None:
    async def client() -> None:
        with pytest.raises(InvalidStatus) as e:
            async with connect(app_server.url("/ws/raise-before-accept")):
                pass
        assert e.value.response.status_code == 500
    run(client())
    # The server keeps serving.
    with rawhttp.Connection(app_server.host, app_server.port, timeout=GUARD) as c:
        assert c.request("GET", "/plain", [("Connection", "close")]).status == 200


def test_message_over_the_default_limit_closes_with_1009(app_server: WsServer) -> None:
    """The default --ws-max-size is 16 MiB, as uvicorn's: a 17 MiB message is refused with
    1009 and never reaches the app (no echo comes back)."""
    async def client() -> None:
        async with connect(app_server.url("/ws/echo"), max_size=None) as ws:
            await ws.send(b"a" * (17 * MiB))
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    run(client())


# ---------------------------------------------------------------------------------------
# many at once


def test_200_connections_next_to_plain_http(fastapi_w2t2: WsServer) -> None:
    server = fastapi_w2t2
    statuses: list[int] = []
    stop = threading.Event()

    def http_load() -> None:
        with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
            while not stop.is_set():
                statuses.append(c.request("GET", "/plain").status)

    async def one(i: int, ready: asyncio.Barrier) -> list:
        async with connect(server.url(f"/ws/echo?tag=many{i}")) as ws:
            await ready.wait()  # every socket open at the same time
            got = []
            for k in range(3):
                m = f"{i}:{k}" if k % 2 == 0 else f"{i}:{k}".encode()
                await ws.send(m)
                got.append(await ws.recv())
            return got

    async def clients() -> list:
        ready = asyncio.Barrier(200)
        return await asyncio.gather(*(one(i, ready) for i in range(200)))

    loader = threading.Thread(target=http_load)
    loader.start()
    try:
        results = run(clients())
    finally:
        stop.set()
        loader.join(GUARD)
    assert results == [[f"{i}:0", f"{i}:1".encode(), f"{i}:2"] for i in range(200)]
    assert statuses and set(statuses) == {200}, statuses[:20]


# ---------------------------------------------------------------------------------------
# flags


@pytest.fixture(scope="module")
def small_limit(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-small"), "fastapi",
                 "--ws-max-size", "4096", "--ws-per-message-deflate", "0")  # click's spelling: as uvicorn


def test_ws_max_size_is_the_largest_message(small_limit: WsServer) -> None:
    async def client() -> None:
        async with connect(small_limit.url("/ws/echo"), compression=None) as ws:
            await ws.send(b"m" * 4096)
            assert await ws.recv() == b"m" * 4096
            await ws.send("t" * 4097)
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    run(client())


def test_per_message_deflate_off_is_not_negotiated(small_limit: WsServer) -> None:
    async def client() -> None:
        async with connect(small_limit.url("/ws/echo")) as ws:  # the client offers deflate
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            await ws.send("plain " * 100)
            assert await ws.recv() == "plain " * 100
    run(client())


def test_per_message_deflate_is_negotiated_by_default(app_server: WsServer) -> None:
    text = "compress me " * 50_000  # 600 kB that deflates well

    async def client() -> None:
        async with connect(app_server.url("/ws/echo"), max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ext.split(";")[0].strip() == "permessage-deflate", ext
            for m in (text, text.encode(), "short"):
                await ws.send(m)
                assert await ws.recv() == m
    run(client())


@pytest.fixture(scope="module")
def ws_off(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> WsServer:
    return start(servers, tmp_path_factory.mktemp("ws-off"), "fastapi", "--ws", "off")


def test_ws_off_refuses_the_upgrade(ws_off: WsServer) -> None:
    """With --ws off an upgrade request is a plain HTTP request: the websocket-only route
    is not found, and an HTTP route answers as usual, without 101."""
    async def client() -> None:
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws_off.url("/ws/echo")):
                pass
        assert e.value.response.status_code == 404
    run(client())
    request, _ = wsraw.handshake_request(ws_off.host, ws_off.port, "/plain")
    with socket.create_connection((ws_off.host, ws_off.port), timeout=GUARD) as s:
        s.sendall(request)
        head, body = wsraw.read_head(s)
        assert wsraw.status_of(head) == 200, head
        assert wsraw.header(head, "sec-websocket-accept") is None, head
        length = int(wsraw.header(head, "content-length") or 0)
        while len(body) < length:
            chunk = s.recv(4096)
            assert chunk, f"connection closed inside the body: {body!r}"
            body += chunk
    assert json.loads(body) == {"plain": True}
