"""File responses: Starlette's FileResponse (which uses http.response.pathsend when the
server offers it) and raw pathsend cases, with a record of the ASGI messages sent."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

DATA_DIR = tempfile.mkdtemp(prefix="uringapi-files-")
FIFO = os.path.join(DATA_DIR, "fifo")
os.mkfifo(FIFO)
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
BIG = os.path.join(DATA_DIR, "big.bin")
EMPTY = os.path.join(DATA_DIR, "empty.txt")
with open(BIG, "wb") as f:
    # Deterministic bytes so that the test can check them: 1 MiB + 3 (not a chunk multiple).
    f.write(bytes((i * 7 + i // 251) & 0xFF for i in range(1024 * 1024 + 3)))
with open(EMPTY, "wb"):
    pass

#: ASGI message types the app sent, per path, most recent request last.
sent: dict[str, list[list[str]]] = {}


async def big(request):
    return FileResponse(BIG, media_type="application/octet-stream")


async def empty(request):
    return FileResponse(EMPTY)


async def relative(request):
    # A relative path, as apps write them (`FileResponse("static/index.html")`), meant from
    # the app's working directory; the worker's is moved away from the front end's here.
    os.chdir(DATA_DIR)
    return FileResponse("big.bin", media_type="application/octet-stream")


async def messages(request):
    return JSONResponse(sent)


starlette_app = Starlette(routes=[
    Route("/big", big, methods=["GET", "HEAD"]),
    Route("/empty", empty),
    Route("/relative", relative),
    Route("/messages", messages),
])


async def app(scope, receive, send):
    if scope["type"] != "http":
        return await starlette_app(scope, receive, send)
    path = scope["path"]
    if path == "/missing":
        # pathsend of a file that does not exist: the server cannot send it.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": os.path.join(DATA_DIR, "no-such-file")})
        return
    if path in ("/device", "/fifo"):
        # pathsend of something that is not a regular file: a device that never ends, or a
        # FIFO (whose open waits for a writer unless the server opens it without waiting).
        target = "/dev/zero" if path == "/device" else FIFO
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.pathsend", "path": target})
        return
    if path == "/after-start":
        # The head goes out on its own first (the app pauses), then the file.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(os.path.getsize(BIG)).encode())]})
        import asyncio
        await asyncio.sleep(0.01)
        await send({"type": "http.response.pathsend", "path": BIG})
        return
    types: list[str] = []

    async def recording_send(message):
        types.append(message["type"])
        await send(message)

    await starlette_app(scope, receive, recording_send)
    sent.setdefault(path, []).append(types)
