"""The app that daphne's own HTTP tests talk to, served by `uringapi serve` (see
daphne_swap.py). It is daphne's recording test application (daphne.testing.TestApplication,
from the daphne sdist), unchanged, with these adaptations to a server that runs the app in
other processes and keeps them running between tests, and to two places where daphne's
tests are stricter than ASGI and HTTP:

- The lock that guards the result file is a file lock (flock) instead of a
  multiprocessing.Lock, which only works between processes forked from the test runner.
- Each request gets a new TestApplication, as each daphne test got a new daphne process:
  TestApplication keeps every message it ever received in `self.messages`.
- After the app has received http.disconnect, its next receive() ends it. TestApplication
  loops on receive() forever; daphne ends it by cancelling the application once the
  connection is gone, while an ASGI server may (and uringapi does, as uvicorn) answer every
  receive() after the response with http.disconnect again. `_Finished` is a BaseException
  so that TestApplication's `except Exception` does not record it as the app's failure.
- The recorded scope leaves out the keys `extensions` (ASGI HTTP spec) and `state` (ASGI
  lifespan spec): both are keys a server may add, but daphne's tests fail on any key
  outside daphne's own list. Everything else is the scope exactly as uringapi built it
  (tests/e2e/test_asgi_differential.py checks both keys against uvicorn).
- `client` and `server` are recorded as lists: ASGI lets a server pass any two-item
  iterable (uringapi and uvicorn pass tuples), and daphne's tests compare with lists.
- The request body reaches TestApplication as one http.request message. daphne starts the
  app only once the whole body is in, and its tests assume the first message carries all
  of it; ASGI lets a server start the app sooner and stream the body in several messages
  (uringapi starts it as soon as the head is in). The shim joins them, after checking that
  every message but the last said more_body=True.
- The recorded headers leave out the one `host: ADDED_HOST` header that daphne_swap.py
  makes the test client send: daphne's tests send HTTP/1.1 requests without Host, which a
  server must answer with 400 (RFC 9112 §3.2), and uringapi does.

- For daphne's websocket tests: a websocket scope is recorded without `http_version`,
  which the ASGI websocket spec lists (default "1.1") but daphne's list of allowed keys
  does not; after websocket.disconnect the next receive() ends the app, as for http.

Each instance appends "start"/"end" to $TMPDIR/daphne-apps.log, so the test side can wait
until the previous test's app is done before it writes the next test's setup file.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

from daphne.testing import TestApplication

#: The Host value daphne_swap.py adds to the test client's HTTP/1.1 requests.
ADDED_HOST = b"added-by-uringapi-conformance.invalid"
LOCK_PATH = os.path.join(tempfile.gettempdir(), "daphne-result.lock")
APPS_LOG = os.path.join(tempfile.gettempdir(), "daphne-apps.log")


class FileLock:
    """acquire()/release() (and `with`) over flock(2) on LOCK_PATH: works across any processes."""

    def __init__(self, path: str = LOCK_PATH) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        assert fd is not None, "release() without acquire()"
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Finished(BaseException):
    """Ends the recording app after it has seen http.disconnect (see the module doc)."""


def _log(word: str) -> None:
    fd = os.open(APPS_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{word}\n".encode())
    finally:
        os.close(fd)


async def app(scope, receive, send):
    assert scope["type"] in ("http", "websocket"), f"daphne's tests use no {scope['type']} scope"
    seen_disconnect = False

    async def receive_until_disconnect():
        nonlocal seen_disconnect
        if seen_disconnect:
            raise _Finished()
        message = await receive()
        body = []
        while message["type"] == "http.request" and message.get("more_body", False):
            body.append(message.get("body", b""))
            message = await receive()
            assert message["type"] in ("http.request", "http.disconnect"), message
        if message["type"] == "http.request" and body:
            message = {**message, "body": b"".join(body) + message.get("body", b"")}
        seen_disconnect = message["type"] in ("http.disconnect", "websocket.disconnect")
        return message

    left_out = ("extensions", "state") + (("http_version",) if scope["type"] == "websocket" else ())
    recorded = {k: v for k, v in scope.items() if k not in left_out}
    recorded["headers"] = [h for h in scope["headers"] if tuple(h) != (b"host", ADDED_HOST)]
    for key in ("client", "server"):
        if recorded.get(key) is not None:
            recorded[key] = list(recorded[key])
    _log("start")
    try:
        await TestApplication(lock=FileLock())(recorded, receive_until_disconnect, send)
    except _Finished:
        pass
    finally:
        _log("end")
