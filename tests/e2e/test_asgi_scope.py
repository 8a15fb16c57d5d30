"""The ASGI `http` scope the app receives (ASGI 3.0 HTTP connection scope)."""

from __future__ import annotations

import json

import pytest

import rawhttp
from harness import Server


def get_scope(server: Server, target: str, headers=None, version: str = "HTTP/1.1") -> dict:
    with rawhttp.Connection(server.host, server.port) as c:
        r = c.request("GET", target, headers, version=version)
    assert r.status == 200, r.body
    return json.loads(r.body)


def test_scope_basics(fastapi_server: Server) -> None:
    s = get_scope(fastapi_server, "/scope")
    assert s["type"] == "http"
    assert s["asgi"]["version"] == "3.0"
    assert s["http_version"] == "1.1"
    assert s["method"] == "GET"
    assert s["scheme"] == "http"
    assert s["path"] == "/scope"
    assert s["query_string"] == ""
    assert s["root_path"] == ""
    assert s["server"] == ["127.0.0.1", fastapi_server.port]
    assert s["client"][0] == "127.0.0.1"
    assert isinstance(s["client"][1], int) and s["client"][1] > 0
    assert s["has_state"], "lifespan state must be copied into each request scope"


def test_scope_http10_version(fastapi_server: Server) -> None:
    assert get_scope(fastapi_server, "/scope", version="HTTP/1.0")["http_version"] == "1.0"


def test_path_is_percent_decoded_raw_path_and_query_are_not(fastapi_server: Server) -> None:
    s = get_scope(fastapi_server, "/scope/caf%C3%A9/a%2Fb?x=1&y=%20z&e=caf%C3%A9")
    # The JSON carries str; path is text, raw_path/query_string were bytes (latin-1 here).
    assert s["path"] == "/scope/café/a/b"
    assert s["raw_path"] in (None, "/scope/caf%C3%A9/a%2Fb")
    assert s["query_string"] == "x=1&y=%20z&e=caf%C3%A9"


def test_headers_lowercased_in_order_with_duplicates(fastapi_server: Server) -> None:
    s = get_scope(
        fastapi_server,
        "/scope",
        [("X-First", "1"), ("Accept", "a/b"), ("x-dup", "one"), ("X-DUP", "two"),
         ("X-Last", "é".encode().decode("latin-1"))],
    )
    names = [k for k, _ in s["headers"]]
    assert all(k == k.lower() for k in names), names
    ours = [h for h in s["headers"] if h[0].startswith("x-") or h[0] == "accept"]
    assert ours == [
        ["x-first", "1"], ["accept", "a/b"], ["x-dup", "one"], ["x-dup", "two"],
        ["x-last", "é".encode().decode("latin-1")],  # bytes passed through as they came
    ]
    assert ["host", "127.0.0.1"] in s["headers"]


@pytest.mark.uringapi_only  # uvicorn's httptools parser keeps trailing whitespace
def test_header_value_surrounding_whitespace_is_stripped(fastapi_server: Server) -> None:
    # RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
    s = get_scope(fastapi_server, "/scope", [("X-Spaces", " \t padded \t value \t ")])
    assert ["x-spaces", "padded \t value"] in s["headers"], s["headers"]


def test_proxy_headers_from_a_trusted_peer_set_client_and_scheme(fastapi_server: Server) -> None:
    # The test client connects from 127.0.0.1, the default --forwarded-allow-ips (as uvicorn).
    s = get_scope(fastapi_server, "/scope", [
        ("X-Forwarded-For", "203.0.113.9, 127.0.0.1"),
        ("X-Forwarded-Proto", "https"),
    ])
    assert s["client"] == ["203.0.113.9", 0]
    assert s["scheme"] == "https"


def test_proxy_headers_from_an_untrusted_peer_are_ignored(servers) -> None:
    server = servers.start("fastapi_app:app", extra_args=("--forwarded-allow-ips", "10.0.0.0/8"))
    s = get_scope(server, "/scope", [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
    ])
    assert s["client"][0] == "127.0.0.1"
    assert s["scheme"] == "http"
