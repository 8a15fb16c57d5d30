"""FastAPI app: the handlers a typical API spends its time in.

- ``GET /plaintext``: text response through the full FastAPI stack.
- ``GET /json``: ``{"message": "Hello, world!"}``.
- ``GET /objects``: 50 Pydantic objects with UUID and datetime fields,
  validated and serialised on every request through ``response_model``.
- ``POST /echo``: a JSON body parsed into a Pydantic model and sent back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

OBJECT_COUNT = 50


class Item(BaseModel):
    id: uuid.UUID
    name: str
    price: float
    created_at: datetime
    tags: list[str]


class Echo(BaseModel):
    message: str
    count: int
    tags: list[str]


def _items() -> list[Item]:
    """Fixed data: every request serialises the same 50 objects."""
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Item(
            id=uuid.UUID(int=i + 1),
            name=f"item-{i}",
            price=round(1.25 * i, 2),
            created_at=epoch + timedelta(minutes=i),
            tags=["bench", f"group-{i % 5}"],
        )
        for i in range(OBJECT_COUNT)
    ]


ITEMS = _items()
app = FastAPI()


@app.get("/plaintext", response_class=PlainTextResponse)
async def plaintext() -> str:
    return "Hello, world!"


@app.get("/json")
async def json() -> dict[str, str]:
    return {"message": "Hello, world!"}


@app.get("/objects", response_model=list[Item])
async def objects() -> list[Item]:
    return ITEMS


@app.post("/echo", response_model=Echo)
async def echo(body: Echo) -> Echo:
    return body
