"""HTTP/1.x on the wire, raw bytes in and out: keep-alive, HTTP/1.0, pipelining,
Expect: 100-continue, HEAD, and malformed requests."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlencode

import httpx
import pytest

import rawhttp
from harness import Server

HELLO = b'{"message":"hello"}'


def test_keepalive_two_requests_on_one_connection(fastapi_server: Server) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        first = c.request("GET", "/json")
        second = c.request("GET", "/items/7?q=again")
    assert (first.status, first.body) == (200, HELLO)
    assert "close" not in first.connection_tokens()
    assert first.header("content-length") == str(len(HELLO))
    assert second.status == 200
    assert json.loads(second.body) == {"item_id": 7, "q": "again", "limit": 10}


def test_connection_close_is_honoured(fastapi_server: Server) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", "/json", [("Connection", "close")])
        assert (r.status, r.body) == (200, HELLO)
        assert "close" in r.connection_tokens()
        assert c.closed_by_peer()


def test_http10_request_gets_response_then_close(fastapi_server: Server) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", "/json", version="HTTP/1.0")
        assert r.status == 200
        assert r.body == HELLO
        assert c.closed_by_peer(), "HTTP/1.0 without keep-alive must end with a close"


@pytest.mark.uringapi_only  # uvicorn's httptools protocol sends chunked to HTTP/1.0 clients
def test_http10_streaming_response_is_not_chunked(fastapi_server: Server) -> None:
    # An HTTP/1.0 client does not know chunked coding (RFC 9112 §7.1): the body is
    # delimited by closing the connection instead.
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", "/stream?n=50", version="HTTP/1.0")
        assert r.status == 200
        assert not r.chunked
        assert r.body == "".join(f"chunk {i}\n" for i in range(50)).encode()


def test_pipelined_requests_answered_in_order(fastapi_server: Server) -> None:
    # The first request is the slow one: its response must still come first.
    requests = [
        rawhttp.build_request("GET", "/sleep?s=0.2"),
        rawhttp.build_request("GET", "/items/1?q=second"),
        rawhttp.build_request("POST", "/echo", body=b"third"),
        rawhttp.build_request("GET", "/items/2?q=fourth"),
    ]
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        c.send(b"".join(requests))
        responses = [c.read_response() for _ in requests]
    assert [r.status for r in responses] == [200] * 4
    assert "start" in json.loads(responses[0].body)
    assert json.loads(responses[1].body)["q"] == "second"
    assert responses[2].body == b"third"
    assert json.loads(responses[3].body)["q"] == "fourth"


def test_expect_100_continue(fastapi_server: Server) -> None:
    body = b"x" * 100_000
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port, timeout=15) as c:
        c.send(rawhttp.build_request(
            "POST", "/echo", [("Content-Length", str(len(body))), ("Expect", "100-continue")]
        ))
        interim = c.read_head()
        assert interim.status == 100, f"expected 100 Continue, got {interim.status}"
        c.send(body)
        r = c.read_response("POST")
    assert r.status == 200
    assert r.body == body


def test_no_100_continue_when_the_app_answers_without_reading_the_body(fastapi_server: Server) -> None:
    # POST to a GET-only route: FastAPI answers 405 without asking for the body, so the
    # client must get the final status first (RFC 9110 §10.1.1), and the connection closes
    # because the unread body would follow.
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port, timeout=15) as c:
        c.send(rawhttp.build_request(
            "POST", "/json", [("Content-Length", "5"), ("Expect", "100-continue")]
        ))
        r = c.read_response("POST")
        assert r.status == 405, f"expected the final 405 first, got {r.status}"
        assert c.closed_by_peer()


def test_head_has_headers_but_no_body(starlette_server: Server) -> None:
    with rawhttp.Connection(starlette_server.host, starlette_server.port) as c:
        get = c.request("GET", "/")
        head = c.request("HEAD", "/")
        # If the server had sent a body for HEAD, this response would not parse.
        after = c.request("GET", "/")
    assert get.body == b"Hello from Starlette"
    assert head.status == 200
    assert head.header("content-length") == str(len(get.body))
    assert head.body == b""
    assert after.body == get.body


def test_chunked_request_body_raw(fastapi_server: Server) -> None:
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: ignored\r\n\r\n"
    )
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        c.send(raw)
        r = c.read_response("POST")
        assert (r.status, r.body) == (200, b"hello world!")
        assert c.request("GET", "/json").body == HELLO


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"NOT AN HTTP REQUEST\r\n\r\n", id="garbage-request-line"),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="content-length-and-chunked",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="conflicting-content-length",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            id="blank-after-chunk-size-without-extension",
        ),
        pytest.param(
            b"GET /json HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
            id="obs-fold",
        ),
    ],
)
def test_malformed_request_gets_400_and_close(fastapi_server: Server, raw: bytes) -> None:
    # DESIGN: a malformed or ambiguous request gets a precise 4xx and the connection
    # is closed (it can no longer be framed safely).
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port, timeout=10) as c:
        c.send(raw)
        r = c.read_response()
        assert 400 <= r.status < 500, f"status {r.status}"
        assert c.closed_by_peer()


BAD_BODIES = [
    # A chunk longer than its size says: found on the first piece of the body.
    b"POST /?mode=count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloZZ\r\n",
    # A good chunk, then a size that is not hex.
    b"POST /?mode=count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\nzz\r\n",
]


def test_bad_request_bodies_leave_the_worker_its_slots(servers) -> None:
    """A request whose body fails in the front end must give back the shared-memory slot
    it took for it: 128 of them (the default --channel-slots) used to leave the worker
    none, and every later request to it hung. 300 bad bodies on one worker, then a good
    request."""
    server = servers.start("echo_app:app", workers=1)
    for i in range(300):
        with rawhttp.Connection(server.host, server.port, timeout=10) as c:
            c.send(BAD_BODIES[i % len(BAD_BODIES)])
            assert c.read_response("POST").status == 400, f"bad body {i}"
    with rawhttp.Connection(server.host, server.port, timeout=10) as c:
        r = c.request("POST", "/?mode=count", body=b"hello")
        assert r.status == 200
        assert json.loads(r.body)["bytes"] == 5


@pytest.fixture(scope="module")
def echo_plain(servers) -> Server:
    return servers.start("echo_app:app", extra_args=("--no-date-header", "--no-server-header"))


@pytest.fixture(scope="module")
def echo_default(servers) -> Server:
    return servers.start("echo_app:app")


@pytest.mark.uringapi_only  # the switches are uringapi's
def test_date_and_server_headers_can_be_switched_off(echo_default: Server,
                                                     echo_plain: Server) -> None:
    with rawhttp.Connection(echo_default.host, echo_default.port) as c:
        default = c.request("GET", "/")
    with rawhttp.Connection(echo_plain.host, echo_plain.port) as c:
        plain = c.request("GET", "/")
    assert default.header("server") == "uringapi"
    assert default.header("date").endswith(" GMT")
    assert plain.status == 200
    assert plain.header("date") is None and plain.header("server") is None


@pytest.mark.uringapi_only  # uvicorn sends both its own and the app's (granian the app's alone, as here)
def test_the_apps_own_server_and_date_are_sent_once_instead_of_ours(echo_default: Server) -> None:
    """An app that sets Server (OWASP's advice: a value that names no software) or Date
    gets its value sent, once; the front end's went out in its place before. Over HTTP/1.1
    and HTTP/2 alike."""
    date = "Thu, 01 Jan 1970 00:00:00 GMT"
    target = "/?" + urlencode([("hdr", "server:edge"), ("hdr", f"date:{date}")])
    with rawhttp.Connection(echo_default.host, echo_default.port) as c:
        r = c.request("GET", target)
        assert (r.header_all("server"), r.header_all("date")) == (["edge"], [date]), r.headers
        # Where the app sets neither, the front end's are sent.
        r = c.request("GET", "/?hdr=x-a:1")
        assert r.header("server") == "uringapi" and r.header("date") != date, r.headers
    with httpx.Client(http1=False, http2=True, timeout=30) as h2:
        r2 = h2.get(f"http://{echo_default.host}:{echo_default.port}{target}")
    assert r2.http_version == "HTTP/2"
    assert (r2.headers.get_list("server"), r2.headers.get_list("date")) == (["edge"], [date])


@pytest.mark.uringapi_only
@pytest.mark.parametrize("mode", ["length", "stream"])
def test_app_supplied_transfer_encoding_is_ignored(echo_default: Server, mode: str) -> None:
    """The front end frames the body itself (Content-Length, or chunked once); a
    Transfer-Encoding from the app would frame it twice, so it is dropped."""
    with rawhttp.Connection(echo_default.host, echo_default.port) as c:
        r = c.request("GET", f"/?mode={mode}&hdr=Transfer-Encoding:chunked")
        after = c.request("GET", "/")  # the stream is still in step
    assert r.status == 200 and after.status == 200
    assert len(r.header_all("transfer-encoding")) == (0 if mode == "length" else 1)
    if mode == "length":
        assert r.header("content-length") == str(len(r.body))
    else:
        assert r.chunked
    assert json.loads(r.body)["path"] == "/"


# HTTP Garden differential payloads (uvicorn, hypercorn and granian all answer 400): an
# invalid request-line is 400, not 505 (RFC 9112 §3), and a trailer line that is not a field
# line is refused and the connection closed (RFC 9112 §7.1.2).
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GE T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="space-in-method"),
        pytest.param(b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="two-spaces-before-version"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="well-formed-unsupported-version"),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nfoo\r\n\r\n",
            400,
            id="trailer-not-a-field-line",
        ),
    ],
)
def test_garden_payloads_exact_status_and_close(fastapi_server: Server, raw: bytes, status: int) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port, timeout=10) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == status
        assert c.closed_by_peer()


@pytest.mark.uringapi_only
def test_a_later_http1_minor_version_is_served_as_1_1(echo_default: Server) -> None:
    """RFC 9110 §2.5: a request in HTTP/1.2 is processed as the highest 1.x we implement.
    uvicorn answers 400 here; nginx and gunicorn serve it, as do we."""
    with rawhttp.Connection(echo_default.host, echo_default.port) as c:
        r = c.request("GET", "/later?q=1", version="HTTP/1.2")
        after = c.request("GET", "/")  # kept alive, as a 1.1 request is
    assert (r.version, r.status) == ("HTTP/1.1", 200)
    seen = json.loads(r.body)
    assert (seen["http_version"], seen["path"], seen["query_string"]) == ("1.1", "/later", "q=1")
    assert after.status == 200


@pytest.mark.uringapi_only  # uvicorn 0.3x resets such a client too
@pytest.mark.parametrize("status", [200, 413])
def test_a_client_that_sends_its_whole_body_before_reading_gets_the_early_answer(
        echo_default: Server, status: int) -> None:
    """The app answers without reading a 32 MiB body (an upload it refuses), and the
    connection closes after the answer. A client that writes the whole body before it reads
    (urllib, http.client) must still get that answer: closed with the body unread, the
    server's socket would reset, failing the client's write (RFC 9112 §9.6: the server
    reads on after its close until the client closes)."""
    body = b"u" * (32 << 20)
    head = (f"POST /?noread=1&status={status} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((echo_default.host, echo_default.port), timeout=30) as sock:
        sock.sendall(head)
        time.sleep(0.2)  # the answer is out and the server has closed its side
        sock.sendall(body)  # a reset would fail this (BrokenPipeError, ConnectionResetError)
        got = b""
        while chunk := sock.recv(1 << 16):
            got += chunk
    assert got.startswith(f"HTTP/1.1 {status} ".encode()), got[:200]
