"""Frame-level trace of httpx's HTTP/2 client against a running server (a diagnostic, not a
test): a TCP proxy between them logs every frame with its time and direction, and the client
logs when each of its requests returned. One stream blocks a worker (`/block?s=3` of
tests/apps/h2_app.py), then, DELAY seconds later, 10 streams of `/sleep?s=0` follow
concurrently on the same connection. Comparing the time a stream's END_STREAM passed the
proxy with the time httpx returned its response tells a server that holds frames from a
client that holds responses.

    uringapi serve h2_app:app --app-dir tests/apps --port 8000 --workers 2 &
    .venv/bin/python tests/e2e/h2trace.py 8000 [DELAY]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
from hyperframe.frame import Frame

T0 = time.monotonic()
LOG: list[tuple[float, str, str, int, str]] = []


def now() -> float:
    return time.monotonic() - T0


class Splitter:
    """Cuts one direction's bytes into frames (after `skip` bytes of preface)."""

    def __init__(self, name: str, skip: int) -> None:
        self.name, self.buf, self.skip = name, b"", skip

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.skip:
            n = min(self.skip, len(self.buf))
            self.buf, self.skip = self.buf[n:], self.skip - n
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            LOG.append((now(), self.name, type(frame).__name__, frame.stream_id, ",".join(sorted(frame.flags))))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, split: Splitter) -> None:
    try:
        while data := await reader.read(65536):
            split.feed(data)
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    writer.close()


async def main(port: int, delay: float) -> None:
    async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(cr, sw, Splitter("C>S", 24)), pipe(sr, cw, Splitter("S>C", 0)))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    done: dict[str, tuple[float, int]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy_port}", http1=False, http2=True,
                                 timeout=30) as client:
        await client.get("/sleep?s=0")  # the connection is up
        global T0
        T0 = time.monotonic()
        LOG.clear()

        async def one(path: str, key: str) -> None:
            r = await client.get(path)
            done[key] = (round(now(), 3), r.json()["pid"])

        blocker = asyncio.create_task(one("/block?s=3", "block"))
        await asyncio.sleep(delay)
        await asyncio.gather(*(one("/sleep?s=0", f"s{i}") for i in range(10)))
        await blocker
    proxy.close()
    for t, direction, kind, stream, flags in LOG:
        if kind in ("HeadersFrame", "DataFrame", "RstStreamFrame", "GoAwayFrame"):
            print(f"{t:7.3f} {direction} {kind:<15} stream {stream:<3} {flags}")
    print("httpx returned (s, pid):", json.dumps(done))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.03))
