"""FastAPI features that parse or wrap the request and response as real apps do, for
tests/e2e/test_fastapi_forms.py: multipart uploads (UploadFile and Form fields, through
python-multipart), URL-encoded forms, CORS and GZip middleware, the redirect to a route's
trailing slash, and url_for (built from the scope's scheme, server and Host)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

app = FastAPI()
app.add_middleware(GZipMiddleware, minimum_size=1000)
app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"],
                   allow_methods=["GET", "POST", "PUT"], allow_headers=["x-token"],
                   max_age=600)


@app.post("/upload")
async def upload(files: Annotated[list[UploadFile], File()],
                 note: Annotated[str, Form()]) -> dict:
    out = []
    for f in files:
        digest = hashlib.sha256()
        size = 0
        while chunk := await f.read(65536):
            digest.update(chunk)
            size += len(chunk)
        out.append({"name": f.filename, "type": f.content_type, "size": size,
                    "sha256": digest.hexdigest()})
    return {"note": note, "files": out}


@app.post("/login")
async def login(user: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict:
    return {"user": user, "password_len": len(password)}


@app.get("/text")
async def text(n: int) -> dict:
    return {"text": "abc" * n}


@app.get("/items/")
async def items() -> dict:
    return {"items": []}


@app.get("/where", name="where")
async def where(request: Request) -> dict:
    return {"url_for": str(request.url_for("where")), "url": str(request.url),
            "client_host": request.client.host if request.client else None}
