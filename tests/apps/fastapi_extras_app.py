"""FastAPI features that tests/apps/fastapi_app.py does not use: dependency injection (nested,
cached per request, and yield dependencies with cleanup), BackgroundTasks, HTTP middleware,
custom exception handlers, and plain `def` endpoints in the thread pool. Served by
tests/e2e/test_fastapi_extras.py.

Nothing here knows about uringapi. Events that happen after a response is sent (cleanup of
a yield dependency, a background task) go to URINGAPI_TEST_EVENT_LOG through
events.record(), so a test can see them.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Annotated, Iterator

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from events import record

app = FastAPI(title="uringapi e2e extras")


# ---- dependency injection --------------------------------------------------------------------

class Counter:
    """Counts how often it was built, to show a dependency is built once per request."""

    built = 0

    def __init__(self) -> None:
        Counter.built += 1
        self.serial = Counter.built


def get_counter() -> Counter:
    return Counter()


def get_user(x_user: Annotated[str | None, Header()] = None) -> str:
    if not x_user:
        raise HTTPException(status_code=401, detail="no user")
    return x_user


def get_greeting(user: Annotated[str, Depends(get_user)],
                 counter: Annotated[Counter, Depends(get_counter)]) -> dict:
    """Depends on two dependencies; `counter` is shared with the endpoint (use_cache)."""
    return {"greeting": f"hello {user}", "serial": counter.serial}


def get_resource(tag: str) -> Iterator[dict]:
    """A yield dependency: its cleanup runs after the response and records `tag`."""
    resource = {"tag": tag, "open": True}
    try:
        yield resource
    finally:
        resource["open"] = False
        record("resource-closed", tag)


@app.get("/greet")
def greet(greeting: Annotated[dict, Depends(get_greeting)],
          counter: Annotated[Counter, Depends(get_counter)]) -> dict:
    return {**greeting, "same_counter": counter.serial == greeting["serial"]}


@app.get("/resource")
async def resource(res: Annotated[dict, Depends(get_resource)]) -> dict:
    return {"tag": res["tag"], "open": res["open"], "pid": os.getpid()}


# ---- background tasks ------------------------------------------------------------------------

def finish(tag: str) -> None:
    record("background", tag)


@app.post("/background")
async def background(tag: str, tasks: BackgroundTasks) -> dict:
    tasks.add_task(finish, tag)
    return {"scheduled": tag}


# ---- middleware ------------------------------------------------------------------------------

@app.middleware("http")
async def add_headers(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["x-middleware"] = "fastapi"
    response.headers["x-elapsed-ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
    return response


# ---- exception handlers ----------------------------------------------------------------------

class OutOfStock(Exception):
    def __init__(self, item: str) -> None:
        self.item = item


@app.exception_handler(OutOfStock)
async def out_of_stock_handler(request: Request, exc: OutOfStock) -> JSONResponse:
    return JSONResponse({"error": "out of stock", "item": exc.item}, status_code=409)


@app.get("/buy/{item}")
async def buy(item: str) -> dict:
    if item.startswith("sold-out"):
        raise OutOfStock(item)
    return {"bought": item}


@app.get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout", headers={"x-kind": "teapot"})


# ---- thread pool -----------------------------------------------------------------------------

@app.get("/sync")
def sync_endpoint() -> PlainTextResponse:
    time.sleep(0.01)  # blocking on purpose: FastAPI runs plain def endpoints in a thread
    return PlainTextResponse(f"main={threading.current_thread() is threading.main_thread()}")
