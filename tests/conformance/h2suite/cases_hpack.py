"""HPACK (RFC 7541) as the server decodes it: each representation of a field (§6), the
dynamic table across header blocks and its eviction (§2.3, §4), table size updates (§4.2,
§6.3), Huffman strings (§5.2) and integers (§5.1). A block the decoder cannot decode is a
connection error of type COMPRESSION_ERROR (RFC 9113 §4.3).

Blocks are written byte by byte here, so that each case shows the representation it sends.
Static table indexes used: 2 ":method: GET", 3 ":method: POST", 4 ":path: /", 6 ":scheme:
http", 7 ":scheme: https", 1 ":authority"."""

from __future__ import annotations

import json

from . import case
from .wire import (
    COMPRESSION_ERROR,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    Fail,
    Target,
    frame,
)


def integer(n: int, prefix: int, flags: int = 0) -> bytes:
    """An integer with an N-bit prefix (§5.1); `flags`: the bits above the prefix."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes([flags | n])
    out = bytearray([flags | top])
    n -= top
    while n >= 128:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def string(raw: bytes) -> bytes:
    """A string literal without Huffman coding (§5.2)."""
    return integer(len(raw), 7) + raw


def head(t: Target, path_index: int = 4) -> bytes:
    """:method GET, :scheme, :path "/", all indexed; then :authority as a literal without
    indexing (indexed name 1)."""
    return bytes([0x82, 0x87 if t.tls else 0x86, 0x80 | path_index]) + b"\x01" + string(b"127.0.0.1")


def echo_head(t: Target) -> bytes:
    """Like `head`, :path "/echo" as a literal without indexing (indexed name 4)."""
    return bytes([0x82, 0x87 if t.tls else 0x86]) + b"\x04" + string(b"/echo") + b"\x01" + \
        string(b"127.0.0.1")


def send(t: Target, block: bytes, stream: int = 1):
    p = t.connect()
    p.send(frame(HEADERS, END_STREAM | END_HEADERS, stream, block))
    return p


def bad(t: Target, block: bytes) -> None:
    with send(t, block) as p:
        p.expect_connection_error(COMPRESSION_ERROR)


def fields_seen(t: Target, *blocks: bytes) -> list[list[list[str]]]:
    """Sends each block as a request to /echo on one connection; the fields the app saw."""
    out = []
    with t.connect() as p:
        for i, block in enumerate(blocks):
            sid = 1 + 2 * i
            p.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
            out.append(json.loads(p.expect_ok(sid).body)["headers"])
    return out


def expect_field(seen: list[list[str]], name: str, value: str) -> None:
    if [name, value] not in seen:
        raise Fail(f"the app did not see {name}: {value}; it saw {seen}")


# §6 representations -----------------------------------------------------------------------


@case("RFC 7541 §6.1", "an indexed field from the static table")
def indexed_static(t: Target) -> None:
    seen = fields_seen(t, echo_head(t) + bytes([0x80 | 16]))  # 16: accept-encoding: gzip, deflate
    expect_field(seen[0], "accept-encoding", "gzip, deflate")


@case("RFC 7541 §6.2.1", "a literal with incremental indexing, new name, then used by index")
def incremental_new_name(t: Target) -> None:
    seen = fields_seen(t, echo_head(t) + b"\x40" + string(b"x-one") + string(b"1"),
                       echo_head(t) + bytes([0x80 | 62]))
    expect_field(seen[0], "x-one", "1")
    expect_field(seen[1], "x-one", "1")


@case("RFC 7541 §6.2.1", "a literal with incremental indexing, indexed name, then used by index")
def incremental_indexed_name(t: Target) -> None:
    # 0x40 | 58: user-agent
    seen = fields_seen(t, echo_head(t) + bytes([0x40 | 58]) + string(b"conf/1"),
                       echo_head(t) + bytes([0x80 | 62]))
    expect_field(seen[0], "user-agent", "conf/1")
    expect_field(seen[1], "user-agent", "conf/1")


@case("RFC 7541 §6.2.2", "a literal without indexing, new name")
def without_indexing(t: Target) -> None:
    seen = fields_seen(t, echo_head(t) + b"\x00" + string(b"x-two") + string(b"2"))
    expect_field(seen[0], "x-two", "2")


@case("RFC 7541 §6.2.3", "a literal never indexed, new and indexed name")
def never_indexed(t: Target) -> None:
    # 0x10 | 15 with a continuation byte: index 23 authorization (4-bit prefix: 15 + 8)
    seen = fields_seen(t, echo_head(t) + b"\x10" + string(b"x-secret") + string(b"s")
                       + b"\x1f\x08" + string(b"Bearer t"))
    expect_field(seen[0], "x-secret", "s")
    expect_field(seen[0], "authorization", "Bearer t")


@case("RFC 7541 §5.2", "Huffman-coded name and value")
def huffman_literals(t: Target) -> None:
    # "x-h" and "abc" in the Huffman code of RFC 7541 Appendix B, padded with 1 bits.
    seen = fields_seen(t, echo_head(t) + b"\x00\x83\xf2\xb4\xff\x82\x1c\x64")
    expect_field(seen[0], "x-h", "abc")


# §2.3 / §4 the dynamic table --------------------------------------------------------------


@case("RFC 7541 §2.3.3", "an indexed field past the end of both tables: COMPRESSION_ERROR")
def index_past_tables(t: Target) -> None:
    bad(t, head(t) + bytes([0x80 | 70]))


@case("RFC 7541 §2.3.3", "a literal whose name index is past both tables: COMPRESSION_ERROR")
def name_index_past_tables(t: Target) -> None:
    bad(t, head(t) + bytes([0x40 | 62]) + string(b"v"))


@case("RFC 7541 §4.4", "entries evicted from the dynamic table are gone; newer ones stay")
def eviction(t: Target) -> None:
    # Five entries of 1,038 octets (§4.1: name + value + 32) in a 4,096-octet table: the
    # first two are evicted, the newest is index 62.
    big = [b"\x40" + string(f"x-big{i}".encode()) + string(b"v" * 1000) for i in range(5)]
    seen = fields_seen(t, echo_head(t) + b"".join(big), echo_head(t) + bytes([0x80 | 62]))
    expect_field(seen[1], "x-big4", "v" * 1000)


@case("RFC 7541 §4.4", "an index of an evicted entry: COMPRESSION_ERROR")
def evicted_index(t: Target) -> None:
    big = [b"\x40" + string(f"x-big{i}".encode()) + string(b"v" * 1000) for i in range(5)]
    with t.connect() as p:
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, head(t) + b"".join(big)))
        p.expect_ok(1)
        # Three 1,038-octet entries fit in 4,096 (62-64): index 65 was evicted.
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 3, head(t) + bytes([0x80 | 65])))
        p.expect_connection_error(COMPRESSION_ERROR)


# §4.2 / §6.3 table size updates -----------------------------------------------------------


@case("RFC 7541 §6.3", "a table size update to 0 at the start of a block empties the table")
def size_update_zero(t: Target) -> None:
    with t.connect() as p:
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1,
                     head(t) + b"\x40" + string(b"x-one") + string(b"1")))
        p.expect_ok(1)
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 3, b"\x20" + head(t)))
        p.expect_ok(3)
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 5, head(t) + bytes([0x80 | 62])))
        p.expect_connection_error(COMPRESSION_ERROR)


@case("RFC 7541 §4.2", "two table size updates at the start of a block are accepted")
def size_update_twice(t: Target) -> None:
    with send(t, b"\x20" + integer(4096, 5, 0x20) + head(t)) as p:  # 0, then 4,096
        p.expect_ok(1)


@case("RFC 7541 §4.2", "a table size update above SETTINGS_HEADER_TABLE_SIZE: COMPRESSION_ERROR")
def size_update_too_large(t: Target) -> None:
    with t.connect() as p:
        limit = p.server_settings.get(1, 4096)
        p.send(frame(HEADERS, END_STREAM | END_HEADERS, 1,
                     integer(limit + 1, 5, 0x20) + head(t)))
        p.expect_connection_error(COMPRESSION_ERROR)


@case("RFC 7541 §4.2", "a table size update after a field: COMPRESSION_ERROR")
def size_update_late(t: Target) -> None:
    bad(t, head(t) + b"\x20")


# §5 primitives ----------------------------------------------------------------------------


@case("RFC 7541 §5.2", "a Huffman string containing EOS: COMPRESSION_ERROR")
def huffman_eos(t: Target) -> None:
    bad(t, head(t) + b"\x00\x84\xff\xff\xff\xff" + string(b"v"))


@case("RFC 7541 §5.2", "Huffman padding longer than 7 bits: COMPRESSION_ERROR")
def huffman_long_padding(t: Target) -> None:
    # "a" (00011) then 11 padding bits.
    bad(t, head(t) + b"\x00\x82\x1f\xff" + string(b"v"))


@case("RFC 7541 §5.2", "Huffman padding that is not the EOS prefix (zeros): COMPRESSION_ERROR")
def huffman_zero_padding(t: Target) -> None:
    bad(t, head(t) + b"\x00\x81\x18" + string(b"v"))


@case("RFC 7541 §5.1", "an integer past any sensible size: COMPRESSION_ERROR")
def integer_overflow(t: Target) -> None:
    bad(t, head(t) + b"\xff" + b"\xff" * 10 + b"\x01")


@case("RFC 7541 §5.2", "a string longer than the block: COMPRESSION_ERROR")
def string_past_block(t: Target) -> None:
    bad(t, head(t) + b"\x00\x7f\x10abc")


@case("RFC 7541 §6.1", "an indexed field with index 0: COMPRESSION_ERROR")
def index_zero(t: Target) -> None:
    bad(t, head(t) + b"\x80")


@case("RFC 7541 §6.2", "a block cut inside a field representation: COMPRESSION_ERROR")
def truncated_block(t: Target) -> None:
    bad(t, head(t) + b"\x40\x05x-on")
