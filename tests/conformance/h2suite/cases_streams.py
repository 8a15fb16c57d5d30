"""Streams: their states and the frames each allows (§5.1), identifiers (§5.1.1), the
concurrency limit (§5.1.2), priority (§5.3), error handling (§5.4)."""

from __future__ import annotations

from . import case
from .wire import (
    CANCEL,
    CONTINUATION,
    END_HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    Fail,
    Peer,
    Target,
    data,
    frame,
    priority,
    rst,
    window_update,
)


def half_closed_remote(t: Target) -> Peer:
    """A connection whose stream 1 is half-closed (remote) at the server: the request ended
    and the response cannot end, its window being 0."""
    p = t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 0)])
    p.send(p.request(1, "/?n=10"))
    p.expect_headers(1)
    return p


def closed_by_reset(t: Target) -> Peer:
    """Stream 1 closed by the client's RST_STREAM."""
    p = t.connect()
    p.send(p.request(1, "/", "POST", end_stream=False), rst(1, CANCEL))
    p.expect_alive()
    return p


def closed_by_end(t: Target) -> Peer:
    """Stream 1 closed by END_STREAM both ways."""
    p = t.connect()
    p.send(p.request(1))
    p.expect_ok(1)
    return p


# §5.1 idle --------------------------------------------------------------------------------


@case("RFC 9113 §5.1", "idle: DATA is a connection error (PROTOCOL_ERROR)")
def idle_data(t: Target) -> None:
    with t.connect() as p:
        p.send(data(1, b"x"))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "idle: RST_STREAM is a connection error (PROTOCOL_ERROR)")
def idle_rst(t: Target) -> None:
    with t.connect() as p:
        p.send(rst(1, CANCEL))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "idle: WINDOW_UPDATE is a connection error (PROTOCOL_ERROR)")
def idle_window_update(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(1, 100))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "idle: CONTINUATION is a connection error (PROTOCOL_ERROR)")
def idle_continuation(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(CONTINUATION, END_HEADERS, 1, p.request_block()))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "idle: PRIORITY is allowed and HEADERS then opens the stream")
def idle_priority_then_headers(t: Target) -> None:
    with t.connect() as p:
        p.send(priority(3, 0, 100))
        p.expect_alive()
        p.send(p.request(3))
        p.expect_ok(3)


@case("RFC 9113 §5.1", "idle: DATA on a stream above the last opened one is PROTOCOL_ERROR")
def idle_data_after_open(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1))
        p.expect_ok(1)
        p.send(data(5, b"x"))
        p.expect_connection_error(PROTOCOL_ERROR)


# §5.1 half-closed (remote) ----------------------------------------------------------------


@case("RFC 9113 §5.1", "half-closed (remote): DATA is a STREAM_CLOSED error")
def half_closed_data(t: Target) -> None:
    with half_closed_remote(t) as p:
        p.send(data(1, b"x"))
        p.expect_stream_error(1, STREAM_CLOSED)


@case("RFC 9113 §5.1", "half-closed (remote): HEADERS is a STREAM_CLOSED error")
def half_closed_headers(t: Target) -> None:
    with half_closed_remote(t) as p:
        p.send(p.headers(1, p.block([("x-trailer", "1")])))
        p.expect_stream_error(1, STREAM_CLOSED)


@case("RFC 9113 §5.1", "half-closed (remote): CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def half_closed_continuation(t: Target) -> None:
    with half_closed_remote(t) as p:
        # Also a CONTINUATION without its HEADERS (§6.10: PROTOCOL_ERROR).
        p.send(frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_stream_error(1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "half-closed (remote): WINDOW_UPDATE is allowed (and lets the response out)")
def half_closed_window_update(t: Target) -> None:
    with half_closed_remote(t) as p:
        p.send(window_update(1, 10))
        r = p.expect_response(1)
        if bytes(r.body) != b"x" * 10:
            raise Fail(f"the body is {bytes(r.body)!r}")


@case("RFC 9113 §5.1", "half-closed (remote): PRIORITY is allowed")
def half_closed_priority(t: Target) -> None:
    with half_closed_remote(t) as p:
        p.send(priority(1, 0, 50))
        p.expect_alive()


@case("RFC 9113 §5.1", "half-closed (remote): RST_STREAM is allowed and closes the stream")
def half_closed_rst(t: Target) -> None:
    with half_closed_remote(t) as p:
        p.send(rst(1, CANCEL))
        p.expect_alive()


# §5.1 closed ------------------------------------------------------------------------------


@case("RFC 9113 §5.1", "closed by RST_STREAM: DATA is a STREAM_CLOSED error")
def reset_data(t: Target) -> None:
    with closed_by_reset(t) as p:
        p.send(data(1, b"x"))
        p.expect_stream_error(1, STREAM_CLOSED)


@case("RFC 9113 §5.1", "closed by RST_STREAM: HEADERS is STREAM_CLOSED (or PROTOCOL_ERROR, §5.1.1)")
def reset_headers(t: Target) -> None:
    with closed_by_reset(t) as p:
        p.send(p.headers(1, p.block([("x-trailer", "1")])))
        p.expect_stream_error(1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "closed by RST_STREAM: CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def reset_continuation(t: Target) -> None:
    with closed_by_reset(t) as p:
        p.send(frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_stream_error(1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "closed by RST_STREAM: PRIORITY is allowed")
def reset_priority(t: Target) -> None:
    with closed_by_reset(t) as p:
        p.send(priority(1, 0, 10))
        p.expect_alive()


@case("RFC 9113 §5.1", "closed by END_STREAM: DATA is a STREAM_CLOSED error")
def closed_data(t: Target) -> None:
    with closed_by_end(t) as p:
        p.send(data(1, b"x"))
        p.expect_stream_error(1, STREAM_CLOSED)


@case("RFC 9113 §5.1", "closed by END_STREAM: HEADERS is STREAM_CLOSED (or PROTOCOL_ERROR, §5.1.1)")
def closed_headers(t: Target) -> None:
    with closed_by_end(t) as p:
        p.send(p.request(1))
        p.expect_stream_error(1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "closed by END_STREAM: CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def closed_continuation(t: Target) -> None:
    with closed_by_end(t) as p:
        p.send(frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_stream_error(1, STREAM_CLOSED, PROTOCOL_ERROR)


@case("RFC 9113 §5.1", "closed by END_STREAM: PRIORITY and WINDOW_UPDATE are allowed")
def closed_priority_window(t: Target) -> None:
    with closed_by_end(t) as p:
        p.send(priority(1, 0, 10), window_update(1, 10))
        p.expect_alive()


@case("RFC 9113 §5.1", "closed by END_STREAM: RST_STREAM is allowed")
def closed_rst(t: Target) -> None:
    with closed_by_end(t) as p:
        p.send(rst(1, CANCEL))
        p.expect_alive()


# §5.1.1 identifiers -----------------------------------------------------------------------


@case("RFC 9113 §5.1.1", "a client stream with an even identifier: connection error (PROTOCOL_ERROR)")
def even_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(2))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.1.1", "a new stream below the last one opened: connection error (PROTOCOL_ERROR)")
def stream_id_backwards(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(5))
        p.expect_ok(5)
        # Stream 3 was idle when 5 opened, so it is closed (§5.1.1): PROTOCOL_ERROR for the
        # unexpected identifier, or STREAM_CLOSED for a frame on a closed stream.
        p.send(p.request(3))
        p.expect_stream_error(3, PROTOCOL_ERROR, STREAM_CLOSED)


@case("RFC 9113 §5.1.1", "stream identifiers may skip numbers")
def stream_id_gaps(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1), p.request(101), p.request(2001))
        for s in (1, 101, 2001):
            p.expect_ok(s)


# §5.1.2 concurrency -----------------------------------------------------------------------


@case("RFC 9113 §5.1.2", "one stream past SETTINGS_MAX_CONCURRENT_STREAMS: PROTOCOL_ERROR or REFUSED_STREAM")
def too_many_streams(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(MAX_CONCURRENT_STREAMS)
        if limit is None or limit > 1000:
            raise Fail(f"the server announces no usable SETTINGS_MAX_CONCURRENT_STREAMS ({limit})")
        ids = [1 + 2 * i for i in range(limit + 1)]
        p.send(*(p.request(s, "/", "POST", end_stream=False) for s in ids))
        p.expect_stream_error(ids[-1], PROTOCOL_ERROR, REFUSED_STREAM)


@case("RFC 9113 §5.1.2", "a stream freed below the limit can be used again")
def streams_at_limit_then_free(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(MAX_CONCURRENT_STREAMS, 100)
        ids = [1 + 2 * i for i in range(min(limit, 300))]
        p.send(*(p.request(s, "/", "POST", end_stream=False) for s in ids))
        p.send(data(1, b""))
        p.expect_ok(1)
        nxt = ids[-1] + 2
        p.send(p.request(nxt))
        p.expect_ok(nxt)


# §5.3 priority ----------------------------------------------------------------------------


@case("RFC 9113 §5.3 (RFC 7540 §5.3.1)", "HEADERS depending on its own stream: stream error (PROTOCOL_ERROR)")
def headers_self_dependency(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.request_block(), prio=(1, 16, False)))
        p.expect_stream_error(1, PROTOCOL_ERROR)


@case("RFC 9113 §5.3 (RFC 7540 §5.3.1)", "PRIORITY depending on its own stream: stream error (PROTOCOL_ERROR)")
def priority_self_dependency(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), priority(1, 1, 16))
        p.expect_stream_error(1, PROTOCOL_ERROR)


@case("RFC 9113 §5.3", "a dependency on a stream that does not exist is accepted")
def priority_unknown_parent(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.request_block(), prio=(99, 16, True)))
        p.expect_ok(1)


# §5.4 error handling ----------------------------------------------------------------------


@case("RFC 9113 §5.4.1", "after a connection error the server sends GOAWAY and closes the connection")
def goaway_then_close(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1))
        p.expect_ok(1)
        p.send(frame(0x6, 0, 0, b"\0" * 3))  # a PING of 3 octets
        p.expect_connection_error(6)
        if not p.closed:
            raise Fail("the connection is still open")


@case("RFC 9113 §5.4.1", "the GOAWAY of a connection error names the last stream processed")
def goaway_last_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1))
        p.expect_ok(1)
        p.send(p.request(3))
        p.expect_ok(3)
        p.send(window_update(0, 0))
        while True:
            f = p.read()
            if f is None:
                return  # closed without GOAWAY: allowed
            if type(f).__name__ == "GoAwayFrame":
                if f.last_stream_id != 3:
                    raise Fail(f"GOAWAY names stream {f.last_stream_id}, expected 3")
                return


@case("RFC 9113 §5.4.2", "a stream error leaves the other streams and the connection open")
def stream_error_is_local(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), window_update(1, 0))
        p.expect_stream_error(1, PROTOCOL_ERROR)
        if p.closed or p.goaway is not None:
            return  # treated as a connection error: allowed
        p.send(p.request(3))
        p.expect_ok(3)
