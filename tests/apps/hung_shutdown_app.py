"""A FastAPI app whose lifespan shutdown never ends, like one whose connection pool's close
waits on a server that went away. Startup records "startup <pid>" and shutdown records
"shutdown-start <pid>" in URINGAPI_TEST_EVENT_LOG (when set), then waits for ever; a
cancelled wait records "shutdown-cancelled <pid>" and re-raises.

GET /  {"ok": true}
"""

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

import events


async def close_pool() -> None:
    """The pool's close, waiting on a peer that never answers."""
    await asyncio.Event().wait()


@asynccontextmanager
async def lifespan(app: FastAPI):
    events.record("startup")
    yield
    events.record("shutdown-start")
    try:
        await close_pool()
    except asyncio.CancelledError:
        events.record("shutdown-cancelled")
        raise


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root() -> dict:
    return {"ok": True}
