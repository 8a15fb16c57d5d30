"""A Litestar application written the way users write them, served by tests/e2e/test_litestar.py.

Nothing here knows about uringapi. The only test hook is events.record(): when
URINGAPI_TEST_EVENT_LOG names a file, startup, shutdown and finished background tasks append
a line to it, so a test can see what happened inside the worker after a response was sent.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncGenerator, AsyncIterator

from litestar import Litestar, Request, Response, get, head, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException
from litestar.middleware import AbstractMiddleware
from litestar.response import File, Stream
from litestar.types import Receive, Scope, Send

from events import record

FILE_SIZE = 300_000


def file_bytes(size: int = FILE_SIZE) -> bytes:
    """sha256(b"0") + sha256(b"1") + ... cut to `size`; tests compute the same."""
    blocks = (size + 31) // 32
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(blocks))[:size]


# ---- lifespan --------------------------------------------------------------------------------

def on_startup(app: Litestar) -> None:
    directory = Path(tempfile.mkdtemp(prefix="uringapi-litestar-"))
    path = directory / "data.bin"
    path.write_bytes(file_bytes())
    app.state.file_path = str(path)
    app.state.startup_pid = os.getpid()
    record("startup")


def on_shutdown(app: Litestar) -> None:
    path = Path(app.state.file_path)
    path.unlink(missing_ok=True)
    path.parent.rmdir()
    record("shutdown")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    app.state.lifespan_entered = True
    yield
    app.state.lifespan_entered = False


# ---- dependency injection --------------------------------------------------------------------

@dataclass
class Settings:
    greeting: str = "hello"


async def provide_settings() -> Settings:
    return Settings()


async def provide_greeter(settings: Settings) -> str:
    """A dependency that depends on another."""
    return f"{settings.greeting} from litestar"


async def provide_session(tag: str) -> AsyncGenerator[dict, None]:
    """A generator dependency: its cleanup runs after the handler and records `tag`."""
    session = {"open": True, "tag": tag}
    try:
        yield session
    finally:
        session["open"] = False
        record("session-closed", tag)


# ---- middleware and exception handlers -------------------------------------------------------

class StampMiddleware(AbstractMiddleware):
    """Adds a response header and counts requests per scope type."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-stamp", b"litestar-mw")]
            await send(message)

        await self.app(scope, receive, stamped)


class TeapotError(Exception):
    """An app-specific error with its own handler."""


def teapot_handler(request: Request, exc: TeapotError) -> Response:
    return Response({"error": "teapot", "detail": str(exc), "path": request.url.path},
                    status_code=418)


# ---- handlers --------------------------------------------------------------------------------

@get("/")
async def index() -> str:
    return "Hello from Litestar"


@get("/items/{item_id:int}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict:
    return {"item_id": item_id, "q": q, "limit": limit}


@get("/users/{name:str}/posts/{post_id:int}")
async def user_post(name: str, post_id: int) -> dict:
    return {"name": name, "post_id": post_id}


@get("/greet", dependencies={"greeter": Provide(provide_greeter)})
async def greet(greeter: str, settings: Settings) -> dict:
    return {"greeting": greeter, "settings": settings.greeting}


@get("/session", dependencies={"session": Provide(provide_session)})
async def session_route(session: dict) -> dict:
    return {"open": session["open"], "tag": session["tag"], "pid": os.getpid()}


@dataclass
class Item:
    name: str
    price: float
    tags: list[str] = field(default_factory=list)


@post("/items")
async def create_item(data: Item) -> Item:
    return data


@post("/echo-json")
async def echo_json(data: dict) -> dict:
    return {"received": data, "keys": sorted(data)}


async def finish_background(tag: str) -> None:
    record("background", tag)


@get("/background")
async def background(tag: str) -> Response[str]:
    return Response("scheduled", background=BackgroundTask(finish_background, tag))


@get("/file")
async def file_route(state: State) -> File:
    return File(path=state.file_path, filename="data.bin", media_type="application/octet-stream")


@head("/file")
async def file_head(state: State) -> File:
    """HEAD is its own handler in Litestar; the server must send no body."""
    return File(path=state.file_path, filename="data.bin", media_type="application/octet-stream")


@get("/stream")
async def stream(n: int = 50) -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"line {i}\n".encode()

    return Stream(chunks(), media_type="text/plain")


@get("/teapot")
async def teapot() -> None:
    raise TeapotError("short and stout")


@get("/forbidden")
async def forbidden() -> None:
    raise HTTPException(status_code=403, detail="no entry")


@get("/missing/{key:str}")
async def missing(key: str) -> None:
    raise NotFoundException(detail=f"no {key}")


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom: raised by the app on purpose")


@get("/state")
async def state_route(state: State) -> dict:
    return {"startup_pid": state.startup_pid, "pid": os.getpid(),
            "lifespan_entered": state.lifespan_entered, "file": bool(state.file_path)}


app = Litestar(
    route_handlers=[index, read_item, user_post, greet, session_route,
                    create_item, echo_json, background, file_route, file_head, stream, teapot,
                    forbidden, missing, boom, state_route],
    dependencies={"settings": Provide(provide_settings)},
    middleware=[StampMiddleware],
    exception_handlers={TeapotError: teapot_handler},
    on_startup=[on_startup],
    on_shutdown=[on_shutdown],
    lifespan=[lifespan],
)
