"""The frame layer: the preface (§3.4), the frame format and sizes (§4.1, §4.2), header
blocks as one contiguous sequence (§4.3), extension frames (§5.5), and each frame type's
own rules (§6.1-§6.10)."""

from __future__ import annotations

import struct

from . import case
from .wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENABLE_PUSH,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Fail,
    PingFrame,
    Target,
    data,
    frame,
    goaway,
    ping,
    priority,
    request_fields,
    settings,
    window_update,
)

# §3.4 -------------------------------------------------------------------------------------


@case("RFC 9113 §3.4", "an invalid preface is a connection error (PROTOCOL_ERROR) or a close")
def preface_invalid(t: Target) -> None:
    with t.connect(handshake=False, preface=b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n") as p:
        p.send(settings())
        # On a plain port the bytes are not HTTP/2 at all: the server may answer them as
        # HTTP/1.1 (an error status) before closing. Over TLS with ALPN h2, only GOAWAY.
        if not t.tls:
            p.sock.settimeout(5)
            got = b""
            try:
                while chunk := p.sock.recv(4096):
                    got += chunk
            except OSError:
                pass
            if got and not (got.startswith(b"HTTP/1.1 4") or got.startswith(b"HTTP/1.1 5")
                            or got[3] == GOAWAY):
                raise Fail(f"answered {got[:40]!r} to an invalid preface")
            return
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §3.4", "a preface not followed by SETTINGS is a connection error (PROTOCOL_ERROR)")
def preface_without_settings(t: Target) -> None:
    with t.connect(handshake=False) as p:
        p.send(ping())
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §3.4", "the preface and SETTINGS split over many small writes")
def preface_dribbled(t: Target) -> None:
    with t.connect(handshake=False, preface=b"") as p:
        for i in range(0, len(PREFACE), 3):
            p.send(PREFACE[i:i + 3])
        p.send(settings())
        p.handshake()
        p.expect_alive()


# §4.1 -------------------------------------------------------------------------------------


@case("RFC 9113 §4.1", "a frame of an unknown type is ignored")
def unknown_type(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(0xEE, 0, 0, b"whatever"), frame(0x20, 0xFF, 1, b""))
        p.expect_alive()


@case("RFC 9113 §4.1", "undefined flags are ignored (PING with every other flag set)")
def undefined_flags(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(PING, 0xFE, 0, b"flagsflg"))
        f = p.read()
        while f is not None and not isinstance(f, PingFrame):
            f = p.read()
        if f is None or f.opaque_data != b"flagsflg" or "ACK" not in f.flags:
            raise Fail(f"the PING was not answered with its payload; saw: {p.saw()}")
        p.expect_alive()


@case("RFC 9113 §4.1", "the reserved bit of the stream identifier is ignored")
def reserved_bit(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(PING, 0, 0x80000000, b"reserved"))
        f = p.read()
        while f is not None and not isinstance(f, PingFrame):
            f = p.read()
        if f is None or f.opaque_data != b"reserved":
            raise Fail(f"the PING was not answered with its payload; saw: {p.saw()}")
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 0x80000001, p.request_block()))
        p.expect_ok(1)


# §4.2 -------------------------------------------------------------------------------------


@case("RFC 9113 §4.2", "DATA larger than SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR")
def data_too_large(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(MAX_FRAME_SIZE, 16384)
        p.send(p.request(1, "/", "POST", end_stream=False), data(1, b"x" * (limit + 1)))
        p.expect_stream_error(1, FRAME_SIZE_ERROR)


@case("RFC 9113 §4.2", "HEADERS larger than SETTINGS_MAX_FRAME_SIZE: connection error FRAME_SIZE_ERROR")
def headers_too_large(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(MAX_FRAME_SIZE, 16384)
        # A frame that can change the connection's state (a header block) MUST be a
        # connection error.
        fields = [(f"x-{i}", "v" * 100) for i in range(limit // 100 + 2)]
        block = p.block([*request_fields(scheme=p.scheme), *fields], huffman=False)
        if len(block) <= limit:
            raise Fail(f"the case's own block of {len(block)} octets is not over {limit}")
        p.send(p.headers(1, block))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §4.2", "SETTINGS larger than SETTINGS_MAX_FRAME_SIZE: connection error (FRAME_SIZE_ERROR)")
def settings_too_large(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(MAX_FRAME_SIZE, 16384)
        body = struct.pack(">HI", 0xFF, 0) * ((limit // 6) + 1)
        p.send(frame(SETTINGS, 0, 0, body))
        p.expect_connection_error(FRAME_SIZE_ERROR)


# §4.3 -------------------------------------------------------------------------------------


@case("RFC 9113 §4.3", "a header block that does not decode: COMPRESSION_ERROR")
def undecodable_block(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86\x84\xff\xff\xff\xff\xff"))
        p.expect_connection_error(9)


@case("RFC 9113 §4.3", "a PRIORITY frame inside a header block: connection error (PROTOCOL_ERROR)")
def priority_inside_block(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:3]), priority(1),
               frame(CONTINUATION, END_HEADERS, 1, block[3:]))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §4.3", "HEADERS of another stream inside a header block: PROTOCOL_ERROR")
def headers_inside_block(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:3]),
               frame(HEADERS, END_STREAM | END_HEADERS, 3, p.request_block()))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §4.3", "a PING inside a header block: connection error (PROTOCOL_ERROR)")
def ping_inside_block(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:3]), ping(),
               frame(CONTINUATION, END_HEADERS, 1, block[3:]))
        p.expect_connection_error(PROTOCOL_ERROR)


# §5.5 -------------------------------------------------------------------------------------


@case("RFC 9113 §5.5", "an extension frame on an open stream is ignored")
def extension_on_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", end_stream=False), frame(0xB0, 0x3, 1, b"ext"),
               data(1, b"abc"))
        p.expect_ok(1)


@case("RFC 9113 §5.5", "an extension frame inside a header block: connection error (PROTOCOL_ERROR)")
def extension_inside_block(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:3]), frame(0xB0, 0, 1, b"ext"),
               frame(CONTINUATION, END_HEADERS, 1, block[3:]))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §5.5", "an unknown SETTINGS identifier is ignored")
def unknown_setting(t: Target) -> None:
    with t.connect(client_settings=[(0x4242, 7), (0xFFFF, 0)]) as p:
        p.expect_alive()


# §6.1 DATA --------------------------------------------------------------------------------


@case("RFC 9113 §6.1", "DATA on stream 0: connection error (PROTOCOL_ERROR)")
def data_stream_zero(t: Target) -> None:
    with t.connect() as p:
        p.send(data(0, b"x"))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.1", "DATA whose padding fills the whole payload: connection error (PROTOCOL_ERROR)")
def data_bad_padding(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False),
               frame(DATA, PADDED | END_STREAM, 1, bytes([6]) + b"abcde"))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.1", "DATA with PADDED but no payload at all: FRAME_SIZE_ERROR or PROTOCOL_ERROR")
def data_padded_empty(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), frame(DATA, PADDED, 1, b""))
        # §4.2: too small to hold the Pad Length field (FRAME_SIZE_ERROR); §6.1: padding
        # not shorter than the payload (PROTOCOL_ERROR). Either code is allowed.
        p.expect_stream_error(1, FRAME_SIZE_ERROR, PROTOCOL_ERROR)


# §6.2 HEADERS -----------------------------------------------------------------------------


@case("RFC 9113 §6.2", "HEADERS on stream 0: connection error (PROTOCOL_ERROR)")
def headers_stream_zero(t: Target) -> None:
    with t.connect() as p:
        p.send(p.headers(0, p.request_block()))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.2", "HEADERS whose padding is longer than the rest: connection error (PROTOCOL_ERROR)")
def headers_bad_padding(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1,
                     bytes([len(block) + 1]) + block))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §4.2", "HEADERS too short for the priority fields it announces: FRAME_SIZE_ERROR")
def headers_priority_short(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(HEADERS, END_STREAM | END_HEADERS | 0x20, 1, b"\0\0\0"))
        # A header block changes the connection's state: a connection error (§4.2).
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.2", "HEADERS without END_HEADERS then DATA: connection error (PROTOCOL_ERROR)")
def headers_then_data(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(HEADERS, 0, 1, p.request_block(method="POST")), data(1, b"x"))
        p.expect_connection_error(PROTOCOL_ERROR)


# §6.3 PRIORITY ----------------------------------------------------------------------------


@case("RFC 9113 §6.3", "PRIORITY on stream 0: connection error (PROTOCOL_ERROR)")
def priority_stream_zero(t: Target) -> None:
    with t.connect() as p:
        p.send(priority(0, 1))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.3", "PRIORITY of 4 octets: stream error (FRAME_SIZE_ERROR)")
def priority_short(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), frame(PRIORITY, 0, 1, b"\0\0\0\0"))
        p.expect_stream_error(1, FRAME_SIZE_ERROR)


@case("RFC 9113 §6.3", "PRIORITY of 6 octets on an idle stream: FRAME_SIZE_ERROR")
def priority_long(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(PRIORITY, 0, 5, b"\0\0\0\0\x10\0"))
        p.expect_stream_error(5, FRAME_SIZE_ERROR)


# §6.4 RST_STREAM --------------------------------------------------------------------------


@case("RFC 9113 §6.4", "RST_STREAM on stream 0: connection error (PROTOCOL_ERROR)")
def rst_stream_zero(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(RST_STREAM, 0, 0, b"\0\0\0\x08"))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.4", "RST_STREAM of 3 octets: connection error (FRAME_SIZE_ERROR)")
def rst_short(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), frame(RST_STREAM, 0, 1, b"\0\0\x08"))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.4", "RST_STREAM of 5 octets: connection error (FRAME_SIZE_ERROR)")
def rst_long(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False),
               frame(RST_STREAM, 0, 1, b"\0\0\0\x08\0"))
        p.expect_connection_error(FRAME_SIZE_ERROR)


# §6.5 SETTINGS ----------------------------------------------------------------------------


@case("RFC 9113 §6.5", "SETTINGS ACK with a payload: connection error (FRAME_SIZE_ERROR)")
def settings_ack_payload(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(SETTINGS, 1, 0, struct.pack(">HI", 4, 100)))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.5", "SETTINGS on a stream: connection error (PROTOCOL_ERROR)")
def settings_on_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((INITIAL_WINDOW_SIZE, 100), stream=1))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.5", "SETTINGS of a length not a multiple of 6: connection error (FRAME_SIZE_ERROR)")
def settings_bad_length(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100) + b"\0\x04\0"))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.5", "an empty SETTINGS frame is acknowledged")
def settings_empty(t: Target) -> None:
    with t.connect() as p:
        p.send(settings())
        p.expect_alive()


# §6.5.2 each setting's bounds -------------------------------------------------------------


@case("RFC 9113 §6.5.2", "SETTINGS_ENABLE_PUSH of 2: connection error (PROTOCOL_ERROR)")
def enable_push_invalid(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((ENABLE_PUSH, 2)))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.5.2", "SETTINGS_ENABLE_PUSH of 0 and 1 are accepted")
def enable_push_valid(t: Target) -> None:
    with t.connect(client_settings=[(ENABLE_PUSH, 0)]) as p:
        p.send(settings((ENABLE_PUSH, 1)), settings((ENABLE_PUSH, 0)))
        p.expect_alive()


@case("RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31: connection error (FLOW_CONTROL_ERROR)")
def initial_window_too_large(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((INITIAL_WINDOW_SIZE, 2**31)))
        p.expect_connection_error(FLOW_CONTROL_ERROR)


@case("RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31-1 is accepted")
def initial_window_max(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 2**31 - 1)]) as p:
        p.send(p.request(1))
        p.expect_ok(1)


@case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE of 16,383: connection error (PROTOCOL_ERROR)")
def max_frame_too_small(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((MAX_FRAME_SIZE, 16383)))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE of 2^24: connection error (PROTOCOL_ERROR)")
def max_frame_too_large(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((MAX_FRAME_SIZE, 2**24)))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE of 2^24-1 is accepted")
def max_frame_max(t: Target) -> None:
    with t.connect(client_settings=[(MAX_FRAME_SIZE, 2**24 - 1)]) as p:
        p.send(p.request(1, "/?n=40000"))
        r = p.expect_response(1, window=True)
        if len(r.body) != 40000:
            raise Fail(f"{len(r.body)} body bytes, expected 40000")


@case("RFC 9113 §6.5.2", "SETTINGS_HEADER_TABLE_SIZE of 0 and SETTINGS_MAX_CONCURRENT_STREAMS of 0")
def table_zero_streams_zero(t: Target) -> None:
    with t.connect(client_settings=[(HEADER_TABLE_SIZE, 0), (MAX_CONCURRENT_STREAMS, 0)]) as p:
        p.send(p.request(1))
        p.expect_ok(1)
        p.send(p.request(3))
        p.expect_ok(3)


@case("RFC 9113 §6.5.2", "a small SETTINGS_MAX_HEADER_LIST_SIZE is accepted (advisory)")
def header_list_small(t: Target) -> None:
    with t.connect(client_settings=[(MAX_HEADER_LIST_SIZE, 64)]) as p:
        p.expect_alive()


# §6.5.3 synchronization -------------------------------------------------------------------


@case("RFC 9113 §6.5.3", "values of one SETTINGS frame apply in order: the last one wins")
def settings_in_order(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)]) as p:
        p.send(p.request(1, "/?n=10"))
        f = p.expect_data(1)
        if len(f.data) != 1:
            raise Fail(f"a DATA frame of {len(f.data)} octets within a window of 1")


@case("RFC 9113 §6.5.3", "each SETTINGS frame gets its own ACK")
def settings_each_acked(t: Target) -> None:
    with t.connect() as p:
        p.send(settings((INITIAL_WINDOW_SIZE, 1000)), settings((INITIAL_WINDOW_SIZE, 2000)),
               settings())
        acks = 0
        while acks < 3:
            f = p.read()
            if f is None:
                raise Fail(f"closed after {acks} ACKs")
            if type(f).__name__ == "SettingsFrame" and "ACK" in f.flags:
                acks += 1
        p.expect_alive()


# §6.6 PUSH_PROMISE ------------------------------------------------------------------------


@case("RFC 9113 §6.6", "PUSH_PROMISE from a client: connection error (PROTOCOL_ERROR)")
def push_promise_from_client(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False),
               frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + p.request_block()))
        p.expect_connection_error(PROTOCOL_ERROR)


# §6.7 PING --------------------------------------------------------------------------------


@case("RFC 9113 §6.7", "PING on a stream: connection error (PROTOCOL_ERROR)")
def ping_on_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(ping(stream=1))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.7", "PING of 6 octets: connection error (FRAME_SIZE_ERROR)")
def ping_short(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(PING, 0, 0, b"\0" * 6))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.7", "PING of 9 octets: connection error (FRAME_SIZE_ERROR)")
def ping_long(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(PING, 0, 0, b"\0" * 9))
        p.expect_connection_error(FRAME_SIZE_ERROR)


# §6.8 GOAWAY ------------------------------------------------------------------------------


@case("RFC 9113 §6.8", "GOAWAY on a stream: connection error (PROTOCOL_ERROR)")
def goaway_on_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(goaway(0, 0, stream=1))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.8", "GOAWAY of 7 octets: connection error (FRAME_SIZE_ERROR)")
def goaway_short(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(GOAWAY, 0, 0, b"\0" * 7))
        p.expect_connection_error(FRAME_SIZE_ERROR)


# §6.9 WINDOW_UPDATE -----------------------------------------------------------------------


@case("RFC 9113 §6.9", "WINDOW_UPDATE of 0 on the connection: connection error (PROTOCOL_ERROR)")
def window_zero_connection(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(0, 0))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.9", "WINDOW_UPDATE of 0 on a stream: stream error (PROTOCOL_ERROR)")
def window_zero_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), window_update(1, 0))
        p.expect_stream_error(1, PROTOCOL_ERROR)


@case("RFC 9113 §6.9", "WINDOW_UPDATE of 3 octets: connection error (FRAME_SIZE_ERROR)")
def window_short(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.9", "WINDOW_UPDATE of 5 octets on a stream: FRAME_SIZE_ERROR")
def window_long(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False),
               frame(WINDOW_UPDATE, 0, 1, b"\0\0\0\x01\0"))
        # §4.2 makes a wrong length a frame size error; §6.9 a connection error.
        p.expect_connection_error(FRAME_SIZE_ERROR)


@case("RFC 9113 §6.9", "the reserved bit of a WINDOW_UPDATE increment is ignored")
def window_reserved_bit(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(0, 0x80000001))
        p.expect_alive()


# §6.9.1 the window ------------------------------------------------------------------------


@case("RFC 9113 §6.9.1", "SETTINGS_INITIAL_WINDOW_SIZE of 1: the response comes 1 octet at a time")
def window_of_one(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 1)]) as p:
        p.send(p.request(1, "/?n=3"))
        for _ in range(3):
            f = p.expect_data(1)
            if len(f.data) != 1:
                raise Fail(f"a DATA frame of {len(f.data)} octets within a window of 1")
            p.send(window_update(1, 1))


@case("RFC 9113 §6.9.1", "the connection window past 2^31-1: connection error (FLOW_CONTROL_ERROR)")
def connection_window_overflow(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(0, 2**31 - 1))
        p.expect_connection_error(FLOW_CONTROL_ERROR)


@case("RFC 9113 §6.9.1", "a stream window past 2^31-1: stream error (FLOW_CONTROL_ERROR)")
def stream_window_overflow(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), window_update(1, 2**31 - 1))
        p.expect_stream_error(1, FLOW_CONTROL_ERROR)


@case("RFC 9113 §6.9.1", "two WINDOW_UPDATEs adding up past 2^31-1 on the connection")
def connection_window_overflow_sum(t: Target) -> None:
    with t.connect() as p:
        p.send(window_update(0, 2**30), window_update(0, 2**30))
        p.expect_connection_error(FLOW_CONTROL_ERROR)


# §6.9.2 initial window size ---------------------------------------------------------------


@case("RFC 9113 §6.9.2", "raising SETTINGS_INITIAL_WINDOW_SIZE opens the windows of open streams")
def initial_window_raised(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 0)]) as p:
        p.send(p.request(1, "/?n=10"))
        p.expect_headers(1)
        p.send(settings((INITIAL_WINDOW_SIZE, 1)))
        f = p.expect_data(1)
        if len(f.data) != 1:
            raise Fail(f"a DATA frame of {len(f.data)} octets after the window became 1")


@case("RFC 9113 §6.9.2", "lowering SETTINGS_INITIAL_WINDOW_SIZE can make a window negative")
def initial_window_negative(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 3)]) as p:
        p.send(p.request(1, "/?n=20"))
        got = len(p.expect_data(1).data)
        if got != 3:
            raise Fail(f"a DATA frame of {got} octets within a window of 3")
        # 3 - 3 sent = 0; the new initial size 1 moves it by -2 to -2; +3 makes it 1.
        p.send(settings((INITIAL_WINDOW_SIZE, 1)), window_update(1, 3))
        got = len(p.expect_data(1).data)
        if got != 1:
            raise Fail(f"a DATA frame of {got} octets where the window was 1 (-2 + 3)")


@case("RFC 9113 §6.9.2", "a window moved past 2^31-1 by SETTINGS: connection error (FLOW_CONTROL_ERROR)")
def initial_window_settings_overflow(t: Target) -> None:
    with t.connect(client_settings=[(INITIAL_WINDOW_SIZE, 0)]) as p:
        p.send(p.request(1, "/?n=10"))
        p.expect_headers(1)
        p.send(window_update(1, 2**31 - 1), settings((INITIAL_WINDOW_SIZE, 1)))
        p.expect_connection_error(FLOW_CONTROL_ERROR)


# §6.10 CONTINUATION -----------------------------------------------------------------------


@case("RFC 9113 §6.10", "CONTINUATION followed by a frame of another type: connection error (PROTOCOL_ERROR)")
def continuation_interrupted(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:2]), frame(CONTINUATION, 0, 1, block[2:4]),
               data(1, b"x"))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.10", "CONTINUATION on stream 0: connection error (PROTOCOL_ERROR)")
def continuation_stream_zero(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:2]),
               frame(CONTINUATION, END_HEADERS, 0, block[2:]))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.10", "CONTINUATION on another stream: connection error (PROTOCOL_ERROR)")
def continuation_other_stream(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block()
        p.send(frame(HEADERS, END_STREAM, 1, block[:2]),
               frame(CONTINUATION, END_HEADERS, 3, block[2:]))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.10", "CONTINUATION after HEADERS with END_HEADERS: connection error (PROTOCOL_ERROR)")
def continuation_after_end_headers(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False),
               frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.10", "CONTINUATION after a CONTINUATION with END_HEADERS: PROTOCOL_ERROR")
def continuation_after_continuation_end(t: Target) -> None:
    with t.connect() as p:
        block = p.request_block(method="POST")
        p.send(frame(HEADERS, 0, 1, block[:2]), frame(CONTINUATION, END_HEADERS, 1, block[2:]),
               frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_connection_error(PROTOCOL_ERROR)


@case("RFC 9113 §6.10", "CONTINUATION after DATA: connection error (PROTOCOL_ERROR)")
def continuation_after_data(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), data(1, b"x", end=False),
               frame(CONTINUATION, END_HEADERS, 1, p.block([("x-late", "1")])))
        p.expect_connection_error(PROTOCOL_ERROR)
