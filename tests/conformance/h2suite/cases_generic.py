"""Well-formed traffic a server must simply serve: every frame type used the ordinary way,
requests with and without bodies, padding, priority fields, trailers. Nothing here is an
error; each case ends with a response or a PING answered."""

from __future__ import annotations

import json

from . import case
from .wire import (
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    CANCEL,
    Fail,
    Target,
    data,
    frame,
    goaway,
    ping,
    priority,
    rst,
    settings,
    window_update,
)


def echo(t: Target, method: str = "POST", body_frames: list[bytes] | None = None,
         extra: tuple[tuple[str, str], ...] = ()) -> dict:
    with t.connect() as p:
        p.send(p.request(1, "/echo", method, extra, end_stream=body_frames is None),
               *(body_frames or []))
        r = p.expect_ok(1)
        return json.loads(r.body)


@case("RFC 9113 §3.4", "the server's preface is a SETTINGS frame and it acknowledges ours")
def preface_exchange(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 65535)]) as p:
        p.expect_alive()


@case("RFC 9113 §8.1", "a GET without a body is answered")
def get(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1))
        if bytes(p.expect_ok(1).body) != b"ok":
            raise Fail("the body is not the app's")


@case("RFC 9113 §8.1", "a HEAD is answered without DATA")
def head(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, method="HEAD"))
        r = p.expect_ok(1)
        if r.body:
            raise Fail(f"{len(r.body)} body bytes in the answer to HEAD")


@case("RFC 9113 §8.1", "a POST with a body in one DATA frame reaches the app whole")
def post_one_frame(t: Target) -> None:
    seen = echo(t, body_frames=[data(1, b"x" * 1000)])
    if seen["body"] != 1000 or seen["http_version"] != "2":
        raise Fail(f"the app saw {seen}")


@case("RFC 9113 §6.1", "a body in several DATA frames reaches the app whole")
def post_many_frames(t: Target) -> None:
    seen = echo(t, body_frames=[data(1, b"a" * 100, end=False), data(1, b"b" * 200, end=False),
                                data(1, b"c" * 300)])
    if seen["body"] != 600:
        raise Fail(f"the app saw {seen['body']} body bytes, not 600")


@case("RFC 9113 §6.1", "padded DATA frames: the padding is not part of the body")
def post_padded(t: Target) -> None:
    seen = echo(t, body_frames=[data(1, b"a" * 10, end=False, pad=20), data(1, b"b" * 5, pad=0)])
    if seen["body"] != 15:
        raise Fail(f"the app saw {seen['body']} body bytes, not 15")


@case("RFC 9113 §6.1", "an empty DATA frame with END_STREAM ends the body")
def post_empty_end(t: Target) -> None:
    seen = echo(t, body_frames=[data(1, b"abc", end=False), data(1, b"")])
    if seen["body"] != 3:
        raise Fail(f"the app saw {seen['body']} body bytes, not 3")


@case("RFC 9113 §8.1", "a POST with trailers (HEADERS with END_STREAM after DATA) is answered")
def post_trailers(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", end_stream=False), data(1, b"abc", end=False),
               p.headers(1, p.block([("x-checksum", "1")]), end_stream=True))
        if json.loads(p.expect_ok(1).body)["body"] != 3:
            raise Fail("the body before the trailers did not reach the app whole")


@case("RFC 9113 §6.2", "HEADERS with padding")
def headers_padded(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.request_block(), pad=30))
        p.expect_ok(1)


@case("RFC 9113 §6.2", "HEADERS with priority fields")
def headers_priority(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.request_block(), prio=(0, 200, False)))
        p.expect_ok(1)


@case("RFC 9113 §6.2", "HEADERS with priority fields and padding")
def headers_priority_padded(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.request_block(), pad=7, prio=(0, 1, True)))
        p.expect_ok(1)


@case("RFC 9113 §6.10", "a header block in HEADERS and two CONTINUATION frames")
def continuation_chain(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block(extra=[("x-long", "v" * 300)])
        a, b, c = block[:5], block[5:40], block[40:]
        p.send(frame(HEADERS, END_STREAM, 1, a), frame(CONTINUATION, 0, 1, b),
               frame(CONTINUATION, END_HEADERS, 1, c))
        p.expect_ok(1)


@case("RFC 9113 §6.10", "an empty CONTINUATION frame ending a header block")
def continuation_empty(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(HEADERS, END_STREAM, 1, p.request_block()),
               frame(CONTINUATION, END_HEADERS, 1, b""))
        p.expect_ok(1)


@case("RFC 9113 §6.3", "PRIORITY frames of each weight and dependency form are accepted")
def priority_forms(t: Target) -> None:
    with t.connect() as p:
        p.send(priority(1, 0, 1), priority(3, 0, 256), priority(5, 3, 16),
               priority(7, 5, 100, exclusive=True))
        p.expect_alive()


@case("RFC 9113 §6.3", "a PRIORITY frame on an open stream")
def priority_open(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", end_stream=False), priority(1, 0, 32), data(1, b"x"))
        p.expect_ok(1)


@case("RFC 9113 §6.4", "RST_STREAM on an open stream closes it; the connection lives on")
def rst_open(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), rst(1, CANCEL))
        p.expect_alive()
        p.send(p.request(3))
        p.expect_ok(3)


@case("RFC 9113 §6.5", "SETTINGS with values is acknowledged")
def settings_values(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((1, 4096), (2, 0), (3, 100), (4, 65535), (5, 16384), (6, 65536)))
        p.expect_alive()


@case("RFC 9113 §6.7", "PING is answered with its payload")
def ping_answered(t: Target) -> None:
    with t.connect() as p:
        p.expect_alive()


@case("RFC 9113 §6.7", "a PING ACK from the client is not answered")
def ping_ack_ignored(t: Target) -> None:
    with t.connect() as p:
        p.send(ping(b"unsolici", ack=True))
        p.expect_alive()  # the first ACK read must be the one for the next PING


@case("RFC 9113 §6.8", "a GOAWAY from the client: streams already sent are still answered")
def client_goaway(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1), goaway(0, 0))
        p.expect_ok(1)


@case("RFC 9113 §6.9", "WINDOW_UPDATE on the connection")
def window_connection(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(0, 1))
        p.expect_alive()


@case("RFC 9113 §6.9", "WINDOW_UPDATE on an open stream")
def window_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", end_stream=False), window_update(1, 1), data(1, b"x"))
        p.expect_ok(1)


@case("RFC 9113 §5.1.2", "streams open side by side on one connection are each answered")
def many_streams(t: Target) -> None:
    with t.connect() as p:
        ids = list(range(1, 40, 2))
        p.send(*(p.request(s, "/echo", "POST", end_stream=False) for s in ids))
        p.send(*(data(s, b"y" * s) for s in reversed(ids)))
        for s in ids:
            if json.loads(p.expect_ok(s).body)["body"] != s:
                raise Fail(f"stream {s}: another stream's body")


@case("RFC 9113 §4.2", "a DATA frame of exactly 16,384 octets is accepted")
def data_max_frame(t: Target) -> None:
    seen = echo(t, body_frames=[data(1, b"z" * 16384)])
    if seen["body"] != 16384:
        raise Fail(f"the app saw {seen['body']} body bytes")


@case("RFC 9113 §6.9.1", "a response larger than the initial window arrives as the client opens it")
def response_beyond_window(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/?n=200000"))
        r = p.expect_response(1, window=True)
        if len(r.body) != 200000:
            raise Fail(f"{len(r.body)} body bytes, expected 200000")
