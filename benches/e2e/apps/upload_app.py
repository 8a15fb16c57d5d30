"""FastAPI app that takes uploads: ``POST /multipart`` (a form with one file, read as an
``UploadFile`` in 1 MiB pieces) and ``POST /stream`` (the raw body, ``request.stream()``).
Both answer the byte count and SHA-256 of what arrived, so a run also checks the bytes.
``GET /`` answers ``ok`` (the readiness probe)."""

from __future__ import annotations

import hashlib

from fastapi import FastAPI, Request, UploadFile

app = FastAPI()


@app.get("/")
async def ready() -> str:
    return "ok"


@app.post("/multipart")
async def multipart(f: UploadFile) -> dict:
    digest = hashlib.sha256()
    size = 0
    while piece := await f.read(1 << 20):
        digest.update(piece)
        size += len(piece)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.post("/stream")
async def stream(request: Request) -> dict:
    digest = hashlib.sha256()
    size = 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    return {"bytes": size, "sha256": digest.hexdigest()}
