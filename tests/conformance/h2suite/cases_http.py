"""Error codes (§7) and HTTP semantics over HTTP/2 (§8): message framing and malformed
messages (§8.1), field rules (§8.2), pseudo-header fields (§8.3), server push (§8.4).

A malformed request (§8.1.1) is a stream error of type PROTOCOL_ERROR; the server MAY
answer it with an HTTP error first. Either way the app never sees it: `malformed` below
fails on a 2xx answer."""

from __future__ import annotations

import json

from . import case
from .wire import (
    PROTOCOL_ERROR,
    Fail,
    Target,
    data,
    goaway,
    request_fields,
    rst,
)


def malformed(t: Target, fields: list[tuple[str, str]], end_stream: bool = True,
              body: list[bytes] | None = None) -> None:
    with t.connect() as p:
        p.send(p.headers(1, p.block(fields, huffman=False), end_stream=end_stream),
               *(body or []))
        p.expect_stream_error(1, PROTOCOL_ERROR, malformed=True)


def base(scheme: str = "http") -> list[tuple[str, str]]:
    return request_fields(scheme=scheme)


def scheme(t: Target) -> str:
    return "https" if t.tls else "http"


# §7 error codes ---------------------------------------------------------------------------


@case("RFC 9113 §7", "RST_STREAM with an unknown error code: no special behaviour")
def rst_unknown_code(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), rst(1, 0xABCDEF))
        p.expect_alive()
        p.send(p.request(3))
        p.expect_ok(3)


@case("RFC 9113 §7", "GOAWAY with an unknown error code: no special behaviour")
def goaway_unknown_code(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1), goaway(1, 0xABCDEF))
        p.expect_ok(1)


# §8.1 framing -----------------------------------------------------------------------------


@case("RFC 9113 §8.1", "a second HEADERS without END_STREAM (trailers must end the stream)")
def trailers_without_end_stream(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), data(1, b"x", end=False),
               p.headers(1, p.block([("x-trailer", "1")]), end_stream=False))
        p.expect_stream_error(1, PROTOCOL_ERROR, malformed=True)


@case("RFC 9113 §8.1", "trailers with a pseudo-header field are malformed")
def trailers_with_pseudo(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/", "POST", end_stream=False), data(1, b"x", end=False),
               p.headers(1, p.block([(":path", "/")]), end_stream=True))
        p.expect_stream_error(1, PROTOCOL_ERROR, malformed=True)
        # Only the stream: the front end resets it (RST_STREAM), the connection stays.
        p.expect_alive()


@case("RFC 9113 §8.1", "trailers right after the request head (no body) are accepted")
def trailers_without_body(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", end_stream=False),
               p.headers(1, p.block([("x-trailer", "1")]), end_stream=True))
        p.expect_ok(1)


@case("RFC 9113 §8.1.1", "content-length above the DATA received is malformed")
def content_length_above(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("content-length", "10")], end_stream=False,
              body=[data(1, b"abc")])


@case("RFC 9113 §8.1.1", "content-length below the DATA received (over several frames) is malformed")
def content_length_below(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("content-length", "4")], end_stream=False,
              body=[data(1, b"abc", end=False), data(1, b"def")])


@case("RFC 9113 §8.1.1", "content-length on a request with END_STREAM on HEADERS and no body is malformed")
def content_length_no_body(t: Target) -> None:
    malformed(t, [(":method", "POST"), *base(scheme(t))[1:], ("content-length", "5")])


@case("RFC 9113 §8.1.1", "a content-length that matches the DATA is accepted")
def content_length_match(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", "POST", [("content-length", "6")], end_stream=False),
               data(1, b"abc", end=False), data(1, b"def"))
        if json.loads(p.expect_ok(1).body)["body"] != 6:
            raise Fail("the body did not reach the app whole")


# §8.2 fields ------------------------------------------------------------------------------


@case("RFC 9113 §8.2", "a field name with uppercase letters is malformed")
def uppercase_name(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("X-Upper", "1")])


@case("RFC 9113 §8.2.1", "a field name with a space is malformed")
def name_with_space(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x bad", "1")])


@case("RFC 9113 §8.2.1", "a regular field name with a colon is malformed")
def name_with_colon(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x:bad", "1")])


@case("RFC 9113 §8.2.1", "an empty field name is malformed")
def name_empty(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("", "1")])


@case("RFC 9113 §8.2.1", "a field value with CR or LF is malformed")
def value_with_crlf(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x-bad", "a\r\nx-injected: 1")])


@case("RFC 9113 §8.2.1", "a field value with NUL is malformed")
def value_with_nul(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x-bad", "a\0b")])


@case("RFC 9113 §8.2.1", "a field value starting with a space is malformed")
def value_leading_space(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x-bad", " a")])


@case("RFC 9113 §8.2.1", "a field value ending with a tab is malformed")
def value_trailing_tab(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("x-bad", "a\t")])


@case("RFC 9113 §8.2.2", "a connection field is malformed")
def connection_field(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("connection", "keep-alive")])


@case("RFC 9113 §8.2.2", "a keep-alive field is malformed")
def keep_alive_field(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("keep-alive", "timeout=5")])


@case("RFC 9113 §8.2.2", "a proxy-connection field is malformed")
def proxy_connection_field(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("proxy-connection", "keep-alive")])


@case("RFC 9113 §8.2.2", "a transfer-encoding field is malformed")
def transfer_encoding_field(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("transfer-encoding", "chunked")], end_stream=False,
              body=[data(1, b"3\r\nabc\r\n0\r\n\r\n")])


@case("RFC 9113 §8.2.2", "an upgrade field is malformed")
def upgrade_field(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("upgrade", "websocket")])


@case("RFC 9113 §8.2.2", "TE with a value other than \"trailers\" is malformed")
def te_not_trailers(t: Target) -> None:
    malformed(t, base(scheme(t)) + [("te", "trailers, deflate")])


@case("RFC 9113 §8.2.2", "TE: trailers is accepted")
def te_trailers(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, extra=[("te", "trailers")]))
        p.expect_ok(1)


@case("RFC 9113 §8.2.3", "cookie fields split into crumbs reach the app joined with \"; \"")
def cookie_crumbs(t: Target) -> None:
    with t.connect() as p:
        p.send(p.request(1, "/echo", extra=[("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2")]))
        seen = json.loads(p.expect_ok(1).body)["headers"]
        cookies = [v for k, v in seen if k == "cookie"]
        if cookies != ["a=1; b=2"]:
            raise Fail(f"the app saw cookie fields {cookies}, expected ['a=1; b=2']")


# §8.3 pseudo-header fields ----------------------------------------------------------------


@case("RFC 9113 §8.3", "an unknown pseudo-header field is malformed")
def unknown_pseudo(t: Target) -> None:
    malformed(t, base(scheme(t)) + [(":foo", "bar")])


@case("RFC 9113 §8.3", "a response pseudo-header field (:status) in a request is malformed")
def status_in_request(t: Target) -> None:
    malformed(t, base(scheme(t)) + [(":status", "200")])


@case("RFC 9113 §8.3", "a pseudo-header field after a regular field is malformed")
def pseudo_after_regular(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, f[:3] + [("x-regular", "1"), f[3]])


@case("RFC 9113 §8.3.1", "an empty :path is malformed")
def empty_path(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [f[0], f[1], (":path", ""), f[3]])


@case("RFC 9113 §8.3.1", "a request without :method is malformed")
def no_method(t: Target) -> None:
    malformed(t, base(scheme(t))[1:])


@case("RFC 9113 §8.3.1", "a request without :scheme is malformed")
def no_scheme(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [f[0], f[2], f[3]])


@case("RFC 9113 §8.3.1", "a request without :path is malformed")
def no_path(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [f[0], f[1], f[3]])


@case("RFC 9113 §8.3.1", "a duplicated :method is malformed")
def dup_method(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [f[0], (":method", "POST"), *f[1:]])


@case("RFC 9113 §8.3.1", "a duplicated :scheme is malformed")
def dup_scheme(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [f[0], f[1], f[1], *f[2:]])


@case("RFC 9113 §8.3.1", "a duplicated :path is malformed")
def dup_path(t: Target) -> None:
    f = base(scheme(t))
    malformed(t, [*f[:3], (":path", "/other"), f[3]])


@case("RFC 9113 §8.3.1", "a duplicated :authority is malformed")
def dup_authority(t: Target) -> None:
    malformed(t, base(scheme(t)) + [(":authority", "example.com")])


@case("RFC 9113 §8.3.1", "CONNECT with :scheme and :path (not an extended CONNECT) is malformed")
def connect_with_path(t: Target) -> None:
    malformed(t, [(":method", "CONNECT"), *base(scheme(t))[1:]])


@case("RFC 9113 §8.3.1", "a request without :authority (but with host) is answered")
def host_instead_of_authority(t: Target) -> None:
    with t.connect() as p:
        f = base(scheme(t))
        p.send(p.headers(1, p.block(f[:3] + [("host", "127.0.0.1")])))
        p.expect_ok(1)


@case("RFC 9113 §8.3.1", "OPTIONS with :path \"*\" is accepted")
def options_asterisk(t: Target) -> None:
    with t.connect() as p:
        f = base(scheme(t))
        p.send(p.headers(1, p.block([(":method", "OPTIONS"), f[1], (":path", "*"), f[3]])))
        r = p.expect_response(1)
        if r.status is None or r.status >= 500:
            raise Fail(f"status {r.status}")


# §8.4 server push -------------------------------------------------------------------------


@case("RFC 9113 §8.4", "the server pushes nothing when the client disables push")
def no_push(t: Target) -> None:
    with t.connect(client_settings=[(2, 0)]) as p:
        p.send(p.request(1))
        p.expect_ok(1)
        if any(s.startswith("PushPromise") for s in p.seen):
            raise Fail("a PUSH_PROMISE although SETTINGS_ENABLE_PUSH is 0")
