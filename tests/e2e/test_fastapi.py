"""A FastAPI app behaves under the server as under any ASGI server: routing,
validation, errors, streaming, large bodies, lifespan state."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

import rawhttp
from harness import Server, ServerFactory

MIB = 1024 * 1024


def deterministic_bytes(size: int) -> bytes:
    """Same formula as tests/apps/fastapi_app.py:deterministic_bytes."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(blocks))[:size]


def random_bytes(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


@pytest.fixture
def client(fastapi_server: Server) -> httpx.Client:
    with httpx.Client(base_url=fastapi_server.base_url, timeout=30) as c:
        yield c


def test_get_json(client: httpx.Client) -> None:
    r = client.get("/json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{"message":"hello"}'
    assert r.headers["content-length"] == str(len(r.content))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/items/42", {"item_id": 42, "q": None, "limit": 10}),
        ("/items/42?q=foo&limit=5", {"item_id": 42, "q": "foo", "limit": 5}),
        ("/items/-7?limit=0", {"item_id": -7, "q": None, "limit": 0}),
        ("/items/1?q=hello%20world%26more", {"item_id": 1, "q": "hello world&more", "limit": 10}),
        ("/items/1?q=caf%C3%A9+au+lait", {"item_id": 1, "q": "café au lait", "limit": 10}),
        ("/items/%34%32", {"item_id": 42, "q": None, "limit": 10}),
    ],
)
def test_path_and_query_params(client: httpx.Client, target: str, expected: dict) -> None:
    r = client.get(target)
    assert r.status_code == 200, r.text
    assert r.json() == expected


def test_path_param_of_wrong_type_is_422(client: httpx.Client) -> None:
    r = client.get("/items/abc")
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["path", "item_id"]
    assert error["type"] == "int_parsing"


def test_post_valid_model(client: httpx.Client) -> None:
    item = {"name": "widget", "price": 9.5, "tags": ["a", "b"]}
    r = client.post("/items", json=item)
    assert r.status_code == 200, r.text
    assert r.json() == item


def test_post_model_default_field(client: httpx.Client) -> None:
    r = client.post("/items", json={"name": "gadget", "price": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "gadget", "price": 3.0, "tags": []}


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        (b'{"price": 1.0}', ["body", "name"], "missing"),
        (b'{"name": "x", "price": "cheap"}', ["body", "price"], "float_parsing"),
        (b'{"name": "x", "price": 1, "tags": "notalist"}', ["body", "tags"], "list_type"),
        (b'{"name": "x", ', ["body", 14], "json_invalid"),
    ],
)
def test_post_invalid_model_is_422_with_fastapi_error_body(
    client: httpx.Client, body: bytes, loc: list, error_type: str
) -> None:
    r = client.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    [error] = r.json()["detail"]
    assert error["loc"] == loc
    assert error["type"] == error_type


def test_unknown_path_is_404(client: httpx.Client) -> None:
    r = client.get("/no/such/path")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}


def test_wrong_method_is_405(client: httpx.Client) -> None:
    r = client.delete("/json")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"


def test_exception_is_500_then_server_keeps_serving(
    client: httpx.Client, fastapi_server: Server
) -> None:
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.content == b"Internal Server Error"
    # Fresh connections: a server may close the one that saw the error.
    for _ in range(fastapi_server.workers * 3):
        with httpx.Client(base_url=fastapi_server.base_url, timeout=30) as fresh:
            assert fresh.get("/json").json() == {"message": "hello"}
    # The user must be able to see their traceback in the server's log.
    deadline = time.monotonic() + 10
    while "boom: raised by the app on purpose" not in fastapi_server.stderr():
        assert time.monotonic() < deadline, "app traceback never reached the server's stderr"
        time.sleep(0.05)
    assert "RuntimeError" in fastapi_server.stderr()


def test_streaming_response_complete_in_order_and_chunked(fastapi_server: Server) -> None:
    n = 2000
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", f"/stream?n={n}")
        assert r.status == 200
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert r.chunked, f"expected Transfer-Encoding: chunked, headers were {r.headers}"
        assert r.header("content-length") is None
        assert r.body == "".join(f"chunk {i}\n" for i in range(n)).encode()
        # The connection is still usable after the terminating chunk.
        again = c.request("GET", "/stream?n=3")
        assert again.body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_streaming_response_via_httpx(client: httpx.Client) -> None:
    with client.stream("GET", "/stream", params={"n": 100}) as r:
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        body = b"".join(r.iter_raw())
    assert body.decode().splitlines() == [f"chunk {i}" for i in range(100)]


def test_exception_after_response_started_aborts_the_body(fastapi_server: Server) -> None:
    # The status line is already out; the only honest signal left is to end the
    # connection without the terminating chunk, so the client knows the body is cut.
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        c.send(rawhttp.build_request("GET", "/stream-fail?n=5"))
        head = c.read_head()
        assert head.status == 200
        assert head.header("transfer-encoding") == "chunked"
        rest = c.read_until_closed()
    assert b"chunk 4\n" in rest
    assert not rest.endswith(b"0\r\n\r\n"), "a failed body must not look complete"
    with httpx.Client(base_url=fastapi_server.base_url, timeout=30) as client:
        assert client.get("/json").status_code == 200


def test_a_client_leaving_a_stream_is_not_an_app_error(servers: ServerFactory) -> None:
    """Clients that close the connection in the middle of a StreamingResponse (a tab
    closed, a download cancelled): the streams end, the worker serves on, and nothing is
    logged as an error, as under uvicorn. Starlette turns the OSError that send() raises
    once the client is gone (ASGI spec 2.4) into its own ClientDisconnect, which uringapi
    used to log with its traceback as an exception in the app, once per such client."""
    server = servers.start("fastapi_app:app", workers=1)
    for _ in range(3):
        with rawhttp.Connection(server.host, server.port) as c:
            c.send(rawhttp.build_request("GET", "/stream?n=1000000"))
            assert c.read_head().status == 200
            assert c._fill(), "the stream is under way"
    time.sleep(1.0)  # the app's next send() finds the client gone
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/json").json() == {"message": "hello"}
    time.sleep(0.5)  # logging is asynchronous
    log = server.stderr()
    for word in ("Traceback", "ClientDisconnect", "exception in ASGI application"):
        assert word not in log, log[-3000:]


@pytest.mark.parametrize("size", [0, 1, 1000, MIB, 3 * MIB + 7])
def test_request_body_round_trip(client: httpx.Client, size: int) -> None:
    body = random_bytes(size, seed=size)
    r = client.post("/echo", content=body)
    assert r.status_code == 200
    assert r.headers["x-body-length"] == str(size)
    assert r.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert r.headers["content-length"] == str(size)
    assert r.content == body


def test_chunked_request_body_round_trip(client: httpx.Client) -> None:
    parts = [random_bytes(n, seed=n) for n in (1, 100, 65536, MIB, 17)]
    body = b"".join(parts)
    # A generator body makes httpx send Transfer-Encoding: chunked.
    r = client.post("/echo", content=iter(parts))
    assert r.status_code == 200
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert r.content == body


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, MIB, 5 * MIB + 3])
def test_response_body_byte_exact(client: httpx.Client, size: int) -> None:
    r = client.get("/big", params={"size": size})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(size)
    expected = deterministic_bytes(size)
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert r.headers["x-body-sha256"] == hashlib.sha256(expected).hexdigest()
    assert r.content == expected


def test_lifespan_state_visible_to_requests(client: httpx.Client, fastapi_server: Server) -> None:
    seen: dict[int, float] = {}
    for _ in range(10 * fastapi_server.workers):
        r = client.get("/state")
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["token"] == "lifespan-ok"
        assert isinstance(data["started_at"], float)
        # One lifespan per worker process: its state is the same for every request.
        assert seen.setdefault(data["pid"], data["started_at"]) == data["started_at"]


def test_response_headers_and_repeated_set_cookie(fastapi_server: Server) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", "/headers", [("X-Dup", "one"), ("X-Dup", "two"), ("X-Mixed-Case", "V")])
    assert r.status == 200
    assert r.header("x-custom") == "custom-value"
    cookies = r.header_all("set-cookie")
    assert [v.split(";")[0] for v in cookies] == ["a=1", "b=2"]
    echoed = json.loads(r.body)["headers"]
    assert ["x-dup", "one"] in echoed and ["x-dup", "two"] in echoed
    assert echoed.index(["x-dup", "one"]) < echoed.index(["x-dup", "two"])
    assert ["x-mixed-case", "V"] in echoed


@pytest.mark.parametrize(("code", "reason"), [
    (200, "OK"), (201, "Created"), (204, "No Content"), (205, "Reset Content"),
    (304, "Not Modified"), (404, "Not Found"), (410, "Gone"), (418, "I'm a teapot"),
    (451, "Unavailable For Legal Reasons"), (503, "Service Unavailable")])
def test_status_codes(fastapi_server: Server, code: int, reason: str) -> None:
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port) as c:
        r = c.request("GET", f"/status/{code}")
        assert r.status == code
        assert r.reason.lower() == reason.lower()  # uvicorn (Python's table) capitalises Teapot
        if code in (204, 304):
            assert r.header("transfer-encoding") is None
            assert r.header("content-length") in (None, "0")
        else:
            assert r.body == b""
        # Framing was right: the next response on the connection parses cleanly.
        assert c.request("GET", "/json").body == b'{"message":"hello"}'


def test_a_long_stream_of_small_pieces_arrives_whole(fastapi_server: Server) -> None:
    # 5,000 pieces run the worker out of response slots again and again: every wait for a
    # returned slot must be woken (ring.rs rule 4), or the stream stalls half way.
    n = 5000
    with rawhttp.Connection(fastapi_server.host, fastapi_server.port, timeout=30) as c:
        r = c.request("GET", f"/stream?n={n}")
    assert r.status == 200
    assert r.body == b"".join(f"chunk {i}\n".encode() for i in range(n))
