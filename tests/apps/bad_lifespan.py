"""A FastAPI app whose lifespan startup fails, like an app whose database is down.

Each startup attempt appends "startup <pid>" to URINGAPI_TEST_EVENT_LOG when it is
set, so a test can count how many times the server tried."""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    log = os.environ.get("URINGAPI_TEST_EVENT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"startup {os.getpid()}\n")
    raise RuntimeError("db down")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root() -> dict:
    return {"unreachable": True}
