"""Handing records back to the front end's window: the request body window (HTTP) and the
client-message window (WebSocket) work alike. The front end sends at most its window of
records for a stream until the worker returns them with `body_credit`, so what the worker
buffers per stream stays bounded whatever the app's pace (body_window.rs in the front end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, Protocol

from uringapi import _native

if TYPE_CHECKING:
    from collections import deque

    from uringapi.worker import Worker


class Owes(Protocol):
    """A stream that takes records out of the worker's buffer: an HTTP request cycle or a
    WebSocket cycle."""

    worker: Worker
    key: int
    owed: int
    crediting: bool


def take_body(s: Owes, chunks: deque[tuple[bytes, bool]]) -> tuple[bytes, bool]:
    """The next request body message from the records queued for the app (`chunks`, not
    empty): all of them joined when the app has fallen behind (at most the window's worth),
    each given back. PERF: an app that pays per message (Starlette writes a spooled
    UploadFile through its thread pool, a hop per message) took 4-5x uvicorn's time for a
    200 MB upload; with this and slot-sized reads in the front end, level with it
    (benches/e2e/upload_ab.sh, benches/results/upload-2026-12-07.txt)."""
    body, more = chunks.popleft()
    if chunks and more:
        parts = [body]
        while chunks and more:
            body, more = chunks.popleft()
            parts.append(body)
        body = b"".join(parts)
        s.owed += len(parts) - 1
    give_back(s)
    return body, more


def give_back(s: Owes) -> None:
    """Returns one record to the front end's window: it may read and send one more. When the
    ring is full, a task retries (and carries any further ones along)."""
    s.owed += 1
    if s.crediting:
        return  # the retrying task sends it along
    try:
        if s.worker.native.body_credit(s.key, s.owed):
            s.owed = 0
            return
    except _native.ChannelBroken as exc:
        _broken(exc)
    s.crediting = True
    s.worker.loop.create_task(_when_room(s))


async def _when_room(s: Owes) -> None:
    try:
        while not s.worker.native.body_credit(s.key, s.owed):
            await s.worker.wait_space()
        s.owed = 0
    except _native.ChannelBroken as exc:
        _broken(exc)
    finally:
        s.crediting = False


def _broken(exc: BaseException) -> NoReturn:
    from uringapi.worker import channel_broken  # worker imports this module

    channel_broken(exc)
