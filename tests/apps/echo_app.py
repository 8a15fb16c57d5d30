"""A plain ASGI app that tells what it saw, for comparing servers byte for byte.

Every request is answered with a compact JSON object of what the app received: method,
http_version, scheme, path, raw_path, query_string, the header list in order, the body read
to its end through receive() (its length, CRC-32, and the bytes themselves when short), and
how the body ended. The same JSON also travels, base64-encoded, in the `x-echo` response
header, so that HEAD, 204 and 304 responses (which carry no body) still show it.

The request chooses the response's shape with query parameters (other parameters are
ignored, so a query string can be anything):

  status=N       status code (default 200)
  mode=length    the JSON in one piece with a Content-Length (default)
  mode=stream    the JSON in `pieces` pieces (default 3), more_body=True, no Content-Length
  mode=empty     no body at all, no Content-Length (one empty http.response.body)
  hdr=Name:Value an extra response header; may repeat, order kept
  noread=1       answer without reading the request body

Two more modes move bulk data without keeping it (for the memory-bound tests):

  mode=count     read the body piece by piece and answer {"bytes": n, "crc32": c}
  mode=download  stream `size` bytes in pieces of `piece` bytes (default 1 MiB); with
                 length=1 the response declares a Content-Length, else it is chunked.
                 Piece i is DOWNLOAD_PATTERN cut to length, with i in its first 8 bytes
                 (little-endian), so a lost, repeated or reordered piece changes the CRC.

Lifespan is supported (and does nothing), so servers that run it by default start cleanly.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Bodies up to this size are echoed in full (as latin-1 text); longer ones by length and CRC.
ECHO_BODY_MAX = 512


#: The bytes a download repeats (see mode=download); tests build the same stream.
DOWNLOAD_PATTERN = bytes(range(251)) * (((1 << 20) // 251) + 1)


def download_piece(index: int, length: int) -> bytes:
    """Piece `index` of a download, `length` bytes long (at most len(DOWNLOAD_PATTERN))."""
    return (struct.pack("<Q", index) + DOWNLOAD_PATTERN[8:length])[:length]


def _latin1(b: bytes) -> str:
    return b.decode("latin-1")


async def _read_body(receive: Receive) -> tuple[bytes, str]:
    """The whole request body, and the type of the event that ended it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), message["type"]
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), "http.request"


def _options(query_string: bytes) -> tuple[int, str, int, list[tuple[bytes, bytes]], bool]:
    status, mode, pieces, extra, noread = 200, "length", 3, [], False
    for key, value in parse_qsl(_latin1(query_string), keep_blank_values=True):
        if key == "status":
            status = int(value)
        elif key == "mode":
            mode = value
        elif key == "pieces":
            pieces = max(1, int(value))
        elif key == "hdr":
            name, _, val = value.partition(":")
            extra.append((name.encode("latin-1"), val.encode("latin-1")))
        elif key == "noread":
            noread = value == "1"
    return status, mode, pieces, extra, noread


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # "startup" or "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    assert scope["type"] == "http", scope["type"]

    status, mode, pieces, extra, noread = _options(scope["query_string"])
    if mode in ("count", "download"):
        await _bulk(mode, scope["query_string"], receive, send)
        return
    body, ended_by = (b"", "not read") if noread else await _read_body(receive)
    seen = {
        "method": scope["method"],
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": _latin1(scope["raw_path"]),
        "query_string": _latin1(scope["query_string"]),
        "root_path": scope.get("root_path", ""),
        "headers": [[_latin1(k), _latin1(v)] for k, v in scope["headers"]],
        "body_len": len(body),
        "body_crc32": zlib.crc32(body),
        "body": _latin1(body) if len(body) <= ECHO_BODY_MAX else None,
        "ended_by": ended_by,
    }
    payload = json.dumps(seen, separators=(",", ":"), sort_keys=True).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"x-echo", base64.b64encode(payload)),
        *extra,
    ]
    if mode == "length":
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
    elif mode == "stream":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        step = -(-len(payload) // pieces)
        for i in range(pieces):
            await send({"type": "http.response.body", "body": payload[i * step:(i + 1) * step],
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif mode == "empty":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    else:
        raise ValueError(f"unknown mode {mode!r}")


async def _bulk(mode: str, query_string: bytes, receive: Receive, send: Send) -> None:
    query = dict(parse_qsl(_latin1(query_string)))
    if mode == "count":
        count, crc = 0, 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunk = message.get("body", b"")
            count += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if not message.get("more_body", False):
                break
        body = json.dumps({"bytes": count, "crc32": crc}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    size = int(query["size"])
    piece = min(int(query.get("piece", 1 << 20)), len(DOWNLOAD_PATTERN))
    headers = [(b"content-type", b"application/octet-stream")]
    if query.get("length") == "1":
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    sent, index = 0, 0
    while sent < size:
        n = min(piece, size - sent)
        await send({"type": "http.response.body", "body": download_piece(index, n),
                    "more_body": True})
        sent += n
        index += 1
    await send({"type": "http.response.body", "body": b""})
