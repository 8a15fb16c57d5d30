"""A plain ASGI app whose import never ends in every worker but the first (worker slot 0):
it calls sleep(3600) through ctypes.PyDLL, which keeps the GIL, as a C extension that blocks
in its module init does. Nothing in that process runs Python meanwhile, so the worker cannot
time its own start: only the front end can end it.

GET any path  {"pid"} as JSON
"""

import ctypes
import json
import os

if os.environ.get("URINGAPI_WORKER_INDEX") != "0":
    ctypes.PyDLL(None).sleep(3600)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
