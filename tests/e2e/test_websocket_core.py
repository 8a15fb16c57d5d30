"""WebSockets end to end, the core path: an unmodified FastAPI `@app.websocket` route
(tests/apps/ws_core_app.py) served by `uringapi serve`, driven by the `websockets` client.

Echo of text and bytes (one slot and many), the scope, subprotocol and accept headers,
permessage-deflate, close codes both ways, close before accept → 403, an exception before
accept → 500, ping/pong answered by the front end, --ws-max-size → 1009, protocol errors
from a raw socket → 1002/1007 without reaching the app, `--ws off`, a worker killed with
SIGKILL → 1011 and the next WebSocket served, SIGTERM → 1001.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness import SERVER_KIND, Server, ServerFactory, free_port

APP = "ws_core_app:app"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def ws_url(server: Server, path: str = "/echo") -> str:
    return f"ws://{server.host}:{server.port}{path}"


def open_ws(server: Server, path: str = "/echo", **kwargs):
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("max_size", None)
    return connect(ws_url(server, path), proxy=None, **kwargs)


@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Server:
    args: tuple[str, ...] = ("--ws-max-size", "2000000")
    if SERVER_KIND == "uringapi":
        args += ("--metrics-port", str(free_port()))
    return servers.start(APP, workers=1, threads=1, extra_args=args)


def metric(server: Server, line_start: str) -> float:
    """One sample from /metrics. The per-worker families are published by the supervisor
    every 100 ms, so a scrape right after start-up may not list them yet: wait for them."""
    metrics_port = server.cmd[server.cmd.index("--metrics-port") + 1]
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"http://{server.host}:{metrics_port}/metrics").text
        for line in text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        assert time.monotonic() < deadline, f"{line_start} not in /metrics"
        time.sleep(0.05)


def wait_metric(server: Server, line_start: str, want: float) -> None:
    """Polls until the sample reads `want` (the published board lags by up to 100 ms)."""
    deadline = time.monotonic() + 10
    while (got := metric(server, line_start)) != want:
        assert time.monotonic() < deadline, f"{line_start} is {got}, want {want}"
        time.sleep(0.05)


def test_text_and_bytes_echo_through_one_slot_and_many(server: Server) -> None:
    with open_ws(server) as ws:
        ws.send("héllo wörld")
        assert ws.recv(timeout=10) == "héllo wörld"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        ws.send("")
        assert ws.recv(timeout=10) == ""
        big = os.urandom(1 << 20)  # 16 slots of 64 KiB each way
        ws.send(big)
        assert ws.recv(timeout=30) == big
        text = "€uro " * 60_000  # 480 KB of UTF-8, cut across slots mid-character
        ws.send(text)
        assert ws.recv(timeout=30) == text


def test_scope_subprotocol_headers_and_deflate(server: Server) -> None:
    with open_ws(server, "/echo?x=1", subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["x-echo"] == "yes"
        assert "permessage-deflate" in ws.response.headers.get("sec-websocket-extensions", "")
        ws.send("scope")
        scope = json.loads(ws.recv(timeout=10))
    assert scope == {
        "type": "websocket", "scheme": "ws", "path": "/echo", "raw_path": "/echo",
        "query_string": "x=1", "subprotocols": ["chat.v2", "chat.v1"], "http_version": "1.1",
        "spec_version": "2.4", "extensions": ["websocket.http.response"], "has_method": False,
    }
    # A long, compressible message goes out compressed and comes back whole.
    with open_ws(server) as ws:
        msg = "abc" * 10_000
        ws.send(msg)
        assert ws.recv(timeout=10) == msg


@pytest.mark.uringapi_only
def test_metrics_count_websockets_messages_and_closes(server: Server) -> None:
    time.sleep(0.3)  # let the board publish what earlier tests did (every 100 ms)
    before_in = metric(server, 'uringapi_websocket_messages_in_total{worker="0"}')
    before_out = metric(server, 'uringapi_websocket_bytes_out_total{worker="0"}')
    before_close = metric(server, 'uringapi_websocket_closes_total{worker="0",code="other"}')
    with open_ws(server) as ws:
        wait_metric(server, 'uringapi_websockets_open{worker="0"}', 1)
        for _ in range(3):
            ws.send("12345")
            ws.recv(timeout=10)
        ws.close(4321)
    wait_metric(server, 'uringapi_websocket_messages_in_total{worker="0"}', before_in + 3)
    wait_metric(server, 'uringapi_websocket_bytes_out_total{worker="0"}', before_out + 15)
    wait_metric(server, 'uringapi_websocket_closes_total{worker="0",code="other"}', before_close + 1)
    wait_metric(server, 'uringapi_websockets_open{worker="0"}', 0)


def test_client_close_code_reaches_the_app(server: Server) -> None:
    with open_ws(server) as ws:
        ws.send("x")
        ws.recv(timeout=10)
        ws.close(4001, "bye")
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.base_url}/last-close").json()["code"] != 4001:
        assert time.monotonic() < deadline, "the app never saw close code 4001"
        time.sleep(0.05)


def test_server_close_code_and_reason_reach_the_client(server: Server) -> None:
    with open_ws(server) as ws:
        ws.send("close:4002:done here")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "done here")


@pytest.mark.uringapi_only
def test_close_codes_and_messages_a_close_frame_cannot_carry_are_the_apps_error(
        server: Server) -> None:
    # 1005 may not be sent (RFC 6455 §7.4.1), and a message must be text or bytes, not both:
    # the app's send() raises, its handler ends, the client gets 1011 and the log says why
    # (the close code is not swapped for another one in silence).
    for command, said in [("close:1005:x", "websocket.close code 1005 may not be sent"),
                          ("send-both", "needs exactly one of 'text' and 'bytes'")]:
        with open_ws(server) as ws:
            ws.send(command)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011, command
        assert said in server.stderr()
    # A reason longer than a close frame holds (123 bytes) is cut at a character boundary,
    # with a warning: the client gets the code and as much of the reason as fits.
    reason = "é" * 100  # 200 bytes in UTF-8
    with open_ws(server) as ws:
        ws.send(f"close:4003:{reason}")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "é" * 61)
    assert "websocket.close reason is 200 bytes in UTF-8" in server.stderr()


def test_close_before_accept_is_403_and_exception_is_500(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, "/deny")
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, "/boom")
    assert info.value.response.status_code == 500
    assert "boom before accept" in server.stderr()


def test_denial_response_with_a_body(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(server, "/teapot")
    assert info.value.response.status_code == 418
    assert info.value.response.body == b"no tea here"


def test_receive_after_a_denial_is_a_disconnect(server: Server) -> None:
    """After close-before-accept (403) or a denial response there is no WebSocket: the
    app's next receive() gets websocket.disconnect, so its task ends instead of waiting
    for as long as the worker lives."""
    for path, status in (("/deny-then-receive", 403), ("/teapot-then-receive", 418)):
        with pytest.raises(InvalidStatus) as info:
            open_ws(server, path)
        assert info.value.response.status_code == status
    deadline = time.monotonic() + 10  # hang guard
    while len(seen := httpx.get(f"{server.base_url}/after-denial").json()) < 2:
        assert time.monotonic() < deadline, f"receive() after a denial still waits: {seen}"
        time.sleep(0.05)
    for name in ("deny", "teapot"):
        assert seen[name]["type"] == "websocket.disconnect", seen


def test_ping_is_answered(server: Server) -> None:
    with open_ws(server) as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(timeout=10)


def test_message_over_ws_max_size_closes_1009(server: Server) -> None:
    with open_ws(server) as ws:
        ws.send(b"x" * 2_000_001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def raw_upgrade(server: Server) -> socket.socket:
    return raw_upgrade_to(server, "/echo")


def raw_upgrade_to(server: Server, path: str) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    return sock


def read_close(sock: socket.socket) -> int:
    """Reads frames until a close frame; returns its code."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed without a close frame: {data!r}"
        data += chunk
        while len(data) >= 2:
            opcode, n = data[0] & 0x0F, data[1] & 0x7F
            if len(data) < 2 + n:
                break
            payload, data = data[2:2 + n], data[2 + n:]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]


@pytest.mark.uringapi_only
@pytest.mark.parametrize(("frame", "code"), [
    (b"\x81\x02hi", 1002),  # unmasked client frame
    (b"\x83\x80\x00\x00\x00\x00", 1002),  # reserved opcode 3
    (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # invalid UTF-8 in a text message
    (b"\x89\xfe\x00\x7e" + b"\x00" * 4 + b"p" * 126, 1002),  # control frame > 125 bytes
])
def test_protocol_errors_close_with_their_code(server: Server, frame: bytes, code: int) -> None:
    with raw_upgrade(server) as sock:
        sock.sendall(frame)
        assert read_close(sock) == code
    # The app saw a disconnect with that code, never the bad frame as data.
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.base_url}/last-close").json()["code"] != code:
        assert time.monotonic() < deadline, f"the app never saw close code {code}"
        time.sleep(0.05)


def masked_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


@pytest.mark.uringapi_only
def test_a_client_that_does_not_read_holds_the_apps_send(server: Server) -> None:
    with raw_upgrade_to(server, "/flood") as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        # Nothing is read: once the socket buffers are full, send() must stop the app.
        counts = []
        for _ in range(3):
            time.sleep(1.0)
            counts.append(httpx.get(f"{server.base_url}/flood-count").json()["sent"])
        assert counts[1] == counts[2], f"the app kept sending to a client that reads nothing: {counts}"
        assert counts[2] < 1000, counts  # well under 64 MiB held anywhere
        # Reading again lets it go on.
        for _ in range(64):
            assert sock.recv(65536)
        time.sleep(0.5)
        assert httpx.get(f"{server.base_url}/flood-count").json()["sent"] > counts[2]


@pytest.mark.uringapi_only
def test_an_app_that_does_not_receive_stops_reading_that_socket_only(server: Server) -> None:
    with raw_upgrade_to(server, "/sink") as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setblocking(False)
        frame = masked_frame(b"s" * 60000)
        sent = 0
        deadline = time.monotonic() + 20
        stuck_since = None
        while True:
            try:
                n = sock.send(frame[sent % len(frame):])
                sent += n
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                if time.monotonic() - stuck_since > 1.0:
                    break
                time.sleep(0.01)
            assert time.monotonic() < deadline, f"the front end kept reading: {sent} bytes"
        assert sent < 64 << 20
        # Other WebSockets on the same worker and channel are served meanwhile.
        with open_ws(server) as ws:
            ws.send(b"still here" * 10_000)
            assert ws.recv(timeout=10) == b"still here" * 10_000


@pytest.mark.uringapi_only
def test_other_versions_get_426(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"sec-websocket-version: 13\r\n" in answer.lower()


@pytest.mark.uringapi_only
def test_handshake_answers_carry_the_front_ends_headers(servers: ServerFactory) -> None:
    """Server, Date and --header are on every response, the 101 and the 426 included (the
    app's own Server, where it sets one, goes out instead, as on any other response)."""
    server = servers.start(APP, workers=1, threads=1, extra_args=("--header", "x-team: core"))
    upgrade = (f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {{}}\r\n\r\n")
    for version, status in (("13", b"101"), ("8", b"426")):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(upgrade.format(version).encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
        head = answer.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert head[0].startswith(b"http/1.1 " + status), head
        assert b"server: uringapi" in head and b"x-team: core" in head, head
        assert sum(line.startswith(b"date: ") for line in head) == 1, head


@pytest.mark.uringapi_only
def test_ws_off_sends_upgrades_to_the_app_as_http(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1, extra_args=("--ws", "off"))
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(
                f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            answer = sock.recv(4096)
        # FastAPI has no http route /echo: the request reached it as plain http.
        assert answer.startswith(b"HTTP/1.1 404 "), answer
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_killed_worker_closes_its_websockets_1011_and_serving_goes_on(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1)
    try:
        with open_ws(server) as ws:
            ws.send("pid")
            pid = int(ws.recv(timeout=10))
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=15)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        # The respawned worker serves new WebSockets.
        deadline = time.monotonic() + 30
        while True:
            try:
                with open_ws(server) as ws:
                    ws.send("pid")
                    assert int(ws.recv(timeout=10)) != pid
                    break
            except (InvalidStatus, ConnectionClosed, OSError):
                assert time.monotonic() < deadline, "no WebSocket served after the worker died"
                time.sleep(0.2)
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_sigterm_closes_open_websockets_1001(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1,
                           extra_args=("--timeout-graceful-shutdown", "1"))
    with open_ws(server) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=15)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert server.wait_exit(15) == 0


@pytest.mark.uringapi_only
def test_wss_echo_and_scope(servers: ServerFactory, tmp_path) -> None:
    import ssl
    import subprocess

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    server = servers.start(APP, workers=1, threads=1, probe_path=None, extra_args=(
        "--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem")))
    ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    try:
        url = f"wss://{server.host}:{server.port}/echo"
        with connect(url, ssl=ctx, proxy=None, open_timeout=10, max_size=None) as ws:
            big = os.urandom(300_000)
            ws.send(big)
            assert ws.recv(timeout=10) == big
            ws.send("scope")
            scope = json.loads(ws.recv(timeout=10))
        assert scope["scheme"] == "wss"
        assert "tls" in scope["extensions"]
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_sighup_leaves_open_websockets_on_the_old_worker(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1)
    try:
        with open_ws(server) as old:
            old.send("pid")
            old_pid = int(old.recv(timeout=10))
            server.proc.send_signal(signal.SIGHUP)
            # New WebSockets go to the replacement once it is ready...
            deadline = time.monotonic() + 30
            while True:
                with open_ws(server) as new:
                    new.send("pid")
                    if int(new.recv(timeout=10)) != old_pid:
                        break
                assert time.monotonic() < deadline, "no replacement worker took WebSockets"
                time.sleep(0.2)
            # ...while the open one keeps its worker.
            old.send("pid")
            assert int(old.recv(timeout=10)) == old_pid
            old.send("still open")
            assert old.recv(timeout=10) == "still open"
        assert "open WebSockets stay on the retiring worker" in server.stderr()
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_a_retiring_worker_past_the_graceful_timeout_closes_its_websockets_1001(
        servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1,
                           extra_args=("--timeout-graceful-shutdown", "1"))
    try:
        with open_ws(server) as ws:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
            server.proc.send_signal(signal.SIGHUP)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        with open_ws(server) as ws:  # the replacement serves
            ws.send("y")
            assert ws.recv(timeout=10) == "y"
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_keepalive_pings_and_an_unanswered_one_closes_1011(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1, extra_args=(
        "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.5"))
    try:
        # A client that answers pings (the websockets library does) stays open.
        with open_ws(server, ping_interval=None) as ws:
            time.sleep(1.5)
            ws.send("alive")
            assert ws.recv(timeout=10) == "alive"
        # One that never answers is closed with 1011 after the timeout.
        with raw_upgrade(server) as sock:
            opcodes = []
            data = b""
            deadline = time.monotonic() + 10
            while 0x8 not in opcodes:
                assert time.monotonic() < deadline, opcodes
                chunk = sock.recv(4096)
                assert chunk, "closed without a close frame"
                data += chunk
                while len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                    n = data[1] & 0x7F
                    opcodes.append(data[0] & 0x0F)
                    if data[0] & 0x0F == 0x8:
                        assert struct.unpack("!H", data[2:4])[0] == 1011
                    data = data[2 + n:]
            assert opcodes[0] == 0x9  # a ping came first
    finally:
        server.stop()


@pytest.mark.uringapi_only
def test_a_client_that_never_reads_is_dropped_after_the_ping_timeout(
        servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1, extra_args=(
        "--ws-ping-interval", "0", "--ws-ping-timeout", "1"))
    try:
        with raw_upgrade_to(server, "/flood") as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            time.sleep(4)  # reads nothing while the app floods it
            # The front end gave up on it: what was buffered drains, then the end.
            sock.settimeout(10)
            while True:
                try:
                    if not sock.recv(1 << 20):
                        break
                except ConnectionResetError:
                    break
        # The worker is free for others.
        with open_ws(server) as ws:
            ws.send("next")
            assert ws.recv(timeout=10) == "next"
    finally:
        server.stop()
