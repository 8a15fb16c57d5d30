"""A small Starlette application: routing, a sync endpoint (thread pool), a streamed
request body, middleware and a background task."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

background_done: list[float] = []


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette")


async def user(request: Request) -> JSONResponse:
    return JSONResponse({"user_id": request.path_params["user_id"], "pid": os.getpid()})


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.stream():
        digest.update(chunk)
        length += len(chunk)
    return JSONResponse({"length": length, "sha256": digest.hexdigest()})


def sync_endpoint(request: Request) -> JSONResponse:
    # Starlette runs plain `def` endpoints in a worker thread.
    return JSONResponse(
        {"in_main_thread": threading.current_thread() is threading.main_thread()}
    )


async def background(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        "scheduled", background=BackgroundTask(lambda: background_done.append(time.time()))
    )


async def background_status(request: Request) -> JSONResponse:
    return JSONResponse({"done": len(background_done)})


class ProcessTimeHeader(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["x-process-time"] = f"{time.perf_counter() - start:.6f}"
        return response


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{user_id:int}", user),
        Route("/upload", upload, methods=["POST"]),
        Route("/sync", sync_endpoint),
        Route("/background", background),
        Route("/background/status", background_status),
    ],
    middleware=[Middleware(ProcessTimeHeader)],
)
