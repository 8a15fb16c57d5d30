"""A quick run of uringapi under the Python this check runs on (3.10, 3.12 and 3.13 in
`make conformance`; the main suite covers 3.11): the abi3 wheel installs, the workers run on
this interpreter, and a plain ASGI app and a FastAPI app answer real requests."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

from support import HERE, get, json_body, start, status


def test_plain_asgi_app_runs_on_this_python(tmp_path: Path) -> None:
    server = start(tmp_path / "server", "smoke_app:app", app_dir=HERE, workers=2)
    try:
        info = json_body(get(server.port, "/", "POST", b"abc"))
        body = bytes(range(256)) * 400
        echoed = get(server.port, "/echo", "POST", body)
    finally:
        code = server.stop()
    assert code == 0, server.stderr_tail()
    assert info["python"] == platform.python_version()
    assert Path(info["executable"]).parent == Path(sys.executable).parent  # this venv
    assert info["sha256"] == hashlib.sha256(b"abc").hexdigest()
    head, _, chunked = echoed.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    data, rest = b"", chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        data, rest = data + rest[:size], rest[size + 2:]
    assert data == body


def test_fastapi_app_runs_on_this_python(tmp_path: Path) -> None:
    server = start(tmp_path / "server", "fastapi_app:app", probe_path="/json")
    try:
        hello = get(server.port, "/json")
        item = get(server.port, "/items/5?q=x")
        created = get(server.port, "/items", "POST",
                      json.dumps({"name": "a", "price": 2.5}).encode(),
                      (("Content-Type", "application/json"),))
        invalid = get(server.port, "/items", "POST", b"{}", (("Content-Type", "application/json"),))
        boom = get(server.port, "/boom")
    finally:
        code = server.stop()
    assert code == 0, server.stderr_tail()
    assert json_body(hello) == {"message": "hello"}
    assert json_body(item) == {"item_id": 5, "q": "x", "limit": 10}
    assert json_body(created) == {"name": "a", "price": 2.5, "tags": []}
    assert status(invalid) == 422 and status(boom) == 500
