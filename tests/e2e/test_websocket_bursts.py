"""An app that sends WebSocket messages faster than they are written: small records queued
behind the one being written go out with it in one write (http1/conn/websocket.rs,
`WS_GATHER_*`). Whatever is joined, the client must see every message whole, in order,
text as text and bytes as bytes, each record still a frame of its own (a message longer
than a slot in continuation frames, as before), with and without permessage-deflate, and
for a client that reads nothing for a while (its records are then copied out of their
slots). Through a channel of 4 slots, so that joined records' slots must go back for the
app to go on."""

from __future__ import annotations

import importlib.util
import time

import pytest
from websockets.sync.client import connect as connect_sync

import wsraw
from harness import APPS_DIR, Server, ServerFactory
from wsraw import BINARY, CONT, TEXT

GUARD = 60.0  # seconds: a bound against hangs, never a speed claim
pytestmark = pytest.mark.uringapi_only  # --channel-slots is ours

_spec = importlib.util.spec_from_file_location("ws_burst_app", APPS_DIR / "ws_burst_app.py")
burst = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(burst)

N = 3000


@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Server:
    return servers.start("ws_burst_app:app", workers=1, extra_args=("--channel-slots", "4"))


def read_messages(conn: wsraw.Conn) -> tuple[list[str | bytes], list[wsraw.Frame], wsraw.Frame]:
    """Every message up to the server's close frame, the data frames they came in, and
    the close frame."""
    frames, close = conn.read_until_close()
    out: list[str | bytes] = []
    parts: list[bytes] = []
    opcode = None
    for f in frames:
        assert f.rsv == 0, f"RSV bits on a frame without an extension: {f.rsv}"
        if opcode is None:
            assert f.opcode in (TEXT, BINARY), f"a message began with opcode {f.opcode}"
            opcode = f.opcode
        else:
            assert f.opcode == CONT, f"a new message (opcode {f.opcode}) inside a fragmented one"
        parts.append(f.payload)
        if f.fin:
            data = b"".join(parts)
            out.append(data.decode("utf-8") if opcode == TEXT else data)
            parts, opcode = [], None
    assert opcode is None, "the close frame came inside a fragmented message"
    return out, frames, close


def check(got: list[str | bytes], seed: int) -> None:
    want = burst.messages(N, seed)
    assert len(got) == len(want), f"{len(got)} messages arrived of {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert type(g) is type(w) and g == w, f"message {i} arrived changed: {type(g).__name__} of {len(g)}, sent {type(w).__name__} of {len(w)}"


def test_a_burst_of_messages_arrives_whole_a_frame_per_record(server: Server) -> None:
    with wsraw.connect(server.host, server.port, f"/burst?n={N}&seed=1", timeout=GUARD) as conn:
        got, frames, close = read_messages(conn)
    assert close.close_code == 1000 and close.close_reason == "done"
    check(got, 1)
    # Each message of up to a slot is one frame, a longer one a frame per slot-sized record.
    want = burst.messages(N, 1)
    sizes = [len(m.encode() if isinstance(m, str) else m) for m in want]
    frames_per = [max(1, -(-s // burst.SLOT)) for s in sizes]
    assert len(frames) == sum(frames_per), "records merged into frames, or split"


def test_a_burst_under_permessage_deflate(server: Server) -> None:
    got: list[str | bytes] = []
    with connect_sync(f"ws://{server.host}:{server.port}/burst?n={N}&seed=2",
                      compression="deflate", max_size=None, open_timeout=GUARD) as ws:
        assert ws.response.headers.get("sec-websocket-extensions", "").startswith("permessage-deflate")
        for message in ws:
            got.append(message)
    assert ws.close_code == 1000 and ws.close_reason == "done"
    check(got, 2)


def test_a_client_that_reads_late_gets_the_whole_burst(server: Server) -> None:
    # A small receive buffer and nothing read for a second: the records the app sent pile
    # up behind the stalled write, and are copied out of their slots (the channel has 4).
    with wsraw.connect(server.host, server.port, f"/burst?n={N}&seed=3", timeout=GUARD,
                       rcvbuf=4096) as conn:
        time.sleep(1.0)
        got, _, close = read_messages(conn)
    assert close.close_code == 1000
    check(got, 3)
