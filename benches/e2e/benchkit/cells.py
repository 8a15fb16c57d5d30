"""The benchmark cells: one app endpoint each, measured under every server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

ECHO_BODY = json.dumps(
    {"message": "Hello, world!", "count": 3, "tags": ["alpha", "beta"]},
    separators=(",", ":"),
).encode()


@dataclass(frozen=True)
class Cell:
    name: str
    group: str
    """App family, usable in --apps to select all its cells."""
    target: str
    """``module:attr`` inside benches/e2e/apps."""
    path: str
    method: str = "GET"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect_length: int | None = None
    expect_contains: bytes = b""
    reference: bool = False
    """Also measured under native-ref, which serves exactly this response from Rust."""
    native_route: bool = False
    """Served by uringapi's front end without Python (`uringapi_args`), so only uringapi
    and native-ref run it."""
    uringapi_args: tuple[str, ...] = ()
    tls: bool = False
    """HTTPS with a self-signed certificate (benchkit/tlscert.py), under every server."""

    def check(self, status: int, body: bytes) -> str | None:
        """Why a response is wrong for this cell, or None when it is right."""
        if status != 200:
            return f"status {status}, expected 200"
        if self.expect_length is not None and len(body) != self.expect_length:
            return f"body of {len(body)} bytes, expected {self.expect_length}"
        if self.expect_contains not in body:
            return f"body lacks {self.expect_contains!r}: {body[:120]!r}"
        return None


CELLS: tuple[Cell, ...] = (
    Cell("hello", "hello", "hello_asgi:app", "/", expect_contains=b"Hello, world!", reference=True),
    Cell("body-10k", "body", "body_asgi:app", "/", expect_length=10 * 1024),
    Cell("fastapi-plaintext", "fastapi", "fastapi_app:app", "/plaintext", expect_contains=b"Hello, world!"),
    Cell("fastapi-json", "fastapi", "fastapi_app:app", "/json", expect_contains=b'"message":"Hello, world!"'),
    Cell("fastapi-objects", "fastapi", "fastapi_app:app", "/objects", expect_contains=b'"created_at"'),
    Cell(
        "fastapi-echo",
        "fastapi",
        "fastapi_app:app",
        "/echo",
        method="POST",
        body=ECHO_BODY,
        headers={"Content-Type": "application/json"},
        expect_contains=b'"tags":["alpha","beta"]',
    ),
    Cell("starlette-file", "starlette", "starlette_files:app", "/file", expect_length=100 * 1024),
    # The native-route target: a --static-mount file against native-ref's in-memory answer.
    Cell(
        "native-static",
        "native",
        "hello_asgi:app",
        "/static/hello.txt",
        expect_contains=b"Hello, world!",
        reference=True,
        native_route=True,
        uringapi_args=("--static-mount", "/static=static"),
    ),
    # TLS ended by each server: keep-alive (record encryption), and a new connection per
    # request (a full TLS 1.3 handshake each, ECDSA P-256).
    Cell("https-hello", "https", "hello_asgi:app", "/", expect_contains=b"Hello, world!", tls=True),
    Cell(
        "https-hello-newconn",
        "https",
        "hello_asgi:app",
        "/",
        headers={"Connection": "close"},
        expect_contains=b"Hello, world!",
        tls=True,
    ),
)
QUICK_CELLS = ("hello", "fastapi-json")
# The fixed-rate run and its rate basis use this cell.
FIXED_RATE_CELL = "hello"


def select(names: list[str] | None) -> list[Cell]:
    """Cells matching any name, by cell name or app group; all when names is None."""
    if names is None:
        return list(CELLS)
    known = {c.name for c in CELLS} | {c.group for c in CELLS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown app/cell {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [c for c in CELLS if c.name in names or c.group in names]


def by_name(name: str) -> Cell:
    return next(c for c in CELLS if c.name == name)
