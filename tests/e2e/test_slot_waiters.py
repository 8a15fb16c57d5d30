"""Senders parked for response space all finish, with the right bytes.

A worker whose channel has 4 response slots answers 200 concurrent requests, each one to
three slots long: most of its senders park for a slot, again and again. The worker wakes
only as many parked senders as can send when slots come back (worker.py `_wake_space`),
and re-arms the front end's "wants space" ring for the rest; a lost wake-up would leave
a stream hanging until the guard, a mixed-up slot would garble a body. Over one HTTP/2
connection (streams multiplexed) and over 64 HTTP/1.1 connections."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from harness import Server, ServerFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from h2_app import pattern  # noqa: E402

pytestmark = pytest.mark.uringapi_only

HANG_GUARD = 60.0  # seconds: a bound against hangs, never a speed claim
SLOT = 65536
SIZES = (100, SLOT - 1000, 2 * SLOT + 500)  # one, one and three slots (with the head)
REQUESTS = 200


@pytest.fixture(scope="module")
def tight(servers: ServerFactory) -> Server:
    return servers.start("h2_app:app", probe_path="/sleep?s=0", workers=1,
                         extra_args=("--channel-slots", "4", "--slot-size", str(SLOT)))


async def _all(client: httpx.AsyncClient) -> list[tuple[int, int, bytes]]:
    async def one(i: int) -> tuple[int, int, bytes]:
        n = SIZES[i % len(SIZES)]
        r = await client.get(f"/download?n={n}")
        return n, r.status_code, r.content

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(REQUESTS))), HANG_GUARD)


def _check(results: list[tuple[int, int, bytes]]) -> None:
    assert len(results) == REQUESTS
    for n, status, body in results:
        assert status == 200
        assert len(body) == n and body == pattern(n)


def test_200_streams_on_one_connection_through_4_slots(tight: Server) -> None:
    async def main() -> list[tuple[int, int, bytes]]:
        async with httpx.AsyncClient(base_url=tight.base_url, http1=False, http2=True, timeout=HANG_GUARD,
                                     limits=httpx.Limits(max_connections=1)) as client:
            return await _all(client)

    _check(asyncio.run(main()))


def test_200_requests_over_64_connections_through_4_slots(tight: Server) -> None:
    async def main() -> list[tuple[int, int, bytes]]:
        async with httpx.AsyncClient(base_url=tight.base_url, timeout=HANG_GUARD,
                                     limits=httpx.Limits(max_connections=64)) as client:
            return await _all(client)

    _check(asyncio.run(main()))
