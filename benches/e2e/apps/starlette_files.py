"""Starlette app: ``GET /file`` sends a 100 KiB file with ``FileResponse``.

The harness writes the file before starting any server and passes its folder
in ``BENCH_STATIC_DIR``; ``payload()`` defines the bytes so both sides agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

FILE_NAME = "100k.bin"
FILE_SIZE = 100 * 1024
STATIC_DIR = Path(os.environ.get("BENCH_STATIC_DIR", "/tmp/uringapi-bench-static"))


def payload() -> bytes:
    """Deterministic 100 KiB: the byte values 0..250 repeated (251 is prime,
    so the pattern does not line up with any power-of-two buffer size)."""
    return bytes(i % 251 for i in range(FILE_SIZE))


async def file(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / FILE_NAME, media_type="application/octet-stream")


app = Starlette(routes=[Route("/file", file)])
