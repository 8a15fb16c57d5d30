"""WebSocket load for the WebSocket cell.

- `echo_rust`: the echo load the cell uses, loadgen/ws_echo.rs (std-only Rust, one epoll loop
  for all WebSockets, built by prereqs.build_ws_echo). The Python client below spent more CPU
  per message than uringapi did, so on 2 cores it, not the servers, set the msgs/s.
- `echo`: the same closed loop with the `websockets` client on uvloop, spread over several
  processes (one event loop each): kept to cross-check the Rust client at a low load
  (`ws_echo.py --client python`). Both: `connections` WebSockets, each in a closed loop (send one binary message of
  `size` bytes, wait for its echo, repeat). Only round trips that complete inside the
  measured window count; the parent's `on_window` hooks run at the window's start and end
  (the CPU snapshots of the server are taken there).
- `idle`: opens `connections` WebSockets, a bounded number of handshakes at a time; each
  sends one 16-byte message and waits for its echo (so each is open and served), then all
  stay idle while the parent's `while_open` hook runs (it reads the server's memory).

permessage-deflate is offered by neither client (compression=None here; no
Sec-WebSocket-Extensions header in ws_echo.rs), so no server compresses: the cell measures framing and the
path from socket to app and back, not zlib.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

HANDSHAKES_AT_ONCE = 64
"""Per process: connection attempts in flight at once (the listen backlog is not a test)."""
SETUP_TIMEOUT_S = 120.0
"""Hang guard for opening every connection (not a speed assertion)."""


class LoadError(OSError):
    """The load could not be run (connections refused, echoes wrong): a failed run."""


@dataclass(frozen=True)
class EchoResult:
    messages: int
    """Round trips completed inside the measured window."""
    window_s: float
    errors: int
    client_cpu_s: float


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _start(connections: int, processes: int,
           child: Callable[[Connection, int], tuple[Callable[..., None], tuple]]
           ) -> tuple[list[mp.process.BaseProcess], list[Connection]]:
    """Forks `processes` load clients that share `connections` between them; child(pipe, share)
    gives each one's target and arguments. Returns the processes and the parent's pipe ends."""
    ctx = mp.get_context("fork")
    children, pipes = [], []
    for share in _shares(connections, processes):
        parent, end = ctx.Pipe()
        target, args = child(end, share)
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        children.append(proc)
        pipes.append(parent)
    return children, pipes


def _gather_opened(pipes: list[Connection], who: str) -> tuple[int, int]:
    """Each client's first message, (tag, opened, failed), summed over the clients."""
    opened = failed = 0
    for pipe in pipes:
        if not pipe.poll(SETUP_TIMEOUT_S):
            raise LoadError(f"{who} did not open its connections in time")
        _, n, e = pipe.recv()
        opened, failed = opened + n, failed + e
    return opened, failed


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


async def _open(url: str, n: int, errors: list[int]):
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def one():
        async with gate:
            try:
                return await connect(url, compression=None, max_size=None, ping_interval=None,
                                     open_timeout=SETUP_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError, Exception):  # noqa: BLE001 - counted
                errors[0] += 1
                return None

    conns = await asyncio.gather(*(one() for _ in range(n)))
    return [c for c in conns if c is not None]


def _echo_child(pipe: Connection, url: str, n: int, size: int) -> None:
    _raise_fd_limit()
    loop = _loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_echo_main(pipe, url, n, size))


async def _echo_main(pipe: Connection, url: str, n: int, size: int) -> None:
    errors = [0]
    conns = await _open(url, n, errors)
    pipe.send(("connected", len(conns), errors[0]))
    start, end = pipe.recv()  # time.time() of the measured window
    payload = os.urandom(size)
    counts = [0]

    async def run(ws) -> None:
        try:
            while True:
                await ws.send(payload)
                got = await ws.recv()
                now = time.time()
                if now >= end:
                    return
                if len(got) != size:
                    errors[0] += 1
                elif now >= start:
                    counts[0] += 1
        except Exception:  # noqa: BLE001 - a dropped connection is an error, not a crash
            errors[0] += 1

    cpu0 = time.process_time()
    await asyncio.gather(*(run(ws) for ws in conns))
    cpu = time.process_time() - cpu0
    for ws in conns:
        ws.transport.abort()
    pipe.send(("done", counts[0], errors[0], cpu))


def echo_rust(binary: Path, port: int, connections: int, size: int, warmup_s: float, duration_s: float,
              on_window: Callable[[str], None]) -> EchoResult:
    """Closed-loop echo with loadgen/ws_echo.rs; on_window("start"/"end") around the window."""
    cmd = [str(binary), "--addr", f"127.0.0.1:{port}", "--path", "/", "--connections", str(connections),
           "--size", str(size)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = _line_within(proc, SETUP_TIMEOUT_S)
        opened = json.loads(line)
        if opened["connected"] < connections:
            raise LoadError(f"only {opened['connected']} of {connections} WebSockets opened "
                            f"({opened['errors']} failed): {_stderr_tail(proc)}")
        start = time.time() + warmup_s
        end = start + duration_s
        proc.stdin.write(f"{start:.6f} {end:.6f}\n")
        proc.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        on_window("start")
        time.sleep(max(0.0, end - time.time()))
        on_window("end")
        done = json.loads(_line_within(proc, SETUP_TIMEOUT_S))
        proc.wait(SETUP_TIMEOUT_S)
        return EchoResult(int(done["messages"]), duration_s, int(done["errors"]), round(done["cpu_s"], 3))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _line_within(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise LoadError(f"the WebSocket echo client stopped or hung: {_stderr_tail(proc)}")
    return line


def _stderr_tail(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    assert proc.stderr is not None
    return proc.stderr.read()[-1000:].strip() or f"exit {proc.wait()}"


def echo(url: str, connections: int, size: int, warmup_s: float, duration_s: float,
         processes: int, on_window: Callable[[str], None]) -> EchoResult:
    """Closed-loop echo; calls on_window("start") and on_window("end") around the window."""
    children, pipes = _start(connections, processes, lambda child, share: (_echo_child, (child, url, share, size)))
    try:
        opened, errors = _gather_opened(pipes, "the load client")
        if opened < connections:
            raise LoadError(f"only {opened} of {connections} WebSockets opened ({errors} failed)")
        start = time.time() + warmup_s
        end = start + duration_s
        for pipe in pipes:
            pipe.send((start, end))
        time.sleep(max(0.0, start - time.time()))
        on_window("start")
        time.sleep(max(0.0, end - time.time()))
        on_window("end")
        messages = cpu = 0.0
        for pipe in pipes:
            if not pipe.poll(SETUP_TIMEOUT_S):
                raise LoadError("the load client did not finish")
            _, m, e, c = pipe.recv()
            messages, errors, cpu = messages + m, errors + e, cpu + c
        return EchoResult(int(messages), duration_s, int(errors), round(cpu, 3))
    finally:
        for proc in children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def _idle_child(pipe: Connection, url: str, n: int) -> None:
    _raise_fd_limit()
    loop = _loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_idle_main(pipe, url, n))


async def _idle_main(pipe: Connection, url: str, n: int) -> None:
    errors = [0]
    conns = await _open(url, n, errors)

    async def hello(ws) -> bool:
        try:
            await ws.send(b"sixteen bytes..!")
            return await ws.recv() == b"sixteen bytes..!"
        except Exception:  # noqa: BLE001 - counted
            return False

    ok = sum(await asyncio.gather(*(hello(ws) for ws in conns)))
    pipe.send(("open", ok, errors[0] + len(conns) - ok))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to go
    for ws in conns:
        ws.transport.abort()


def idle(url: str, connections: int, processes: int, while_open: Callable[[], dict]) -> dict:
    """Opens `connections` idle WebSockets, calls while_open() once all are open and have
    echoed once, and returns its result with the count of open connections."""
    children, pipes = _start(connections, processes, lambda child, share: (_idle_child, (child, url, share)))
    try:
        opened, failed = _gather_opened(pipes, "the idle client")
        if opened < connections:
            raise LoadError(f"only {opened} of {connections} idle WebSockets opened and echoed")
        result = while_open()
        return {**result, "open": opened, "failed": failed}
    finally:
        for pipe in pipes:
            try:
                pipe.send("go")
            except OSError:
                pass
        for proc in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
