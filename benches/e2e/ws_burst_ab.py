"""WebSocket message floods, two builds of uringapi side by side with uvicorn and granian:
the server's CPU (utime+stime of its whole process group from /proc, ticks of 10 ms; the
front end's alone in brackets) and the wall time for 100,000 messages of 64 bytes sent by
the app as fast as `send` returns (`push`) and by the client (`pull`), over one
WebSocket without permessage-deflate, the websockets client on the same machine.

    .venv/bin/python benches/e2e/ws_burst_ab.py OLD_EXE NEW_EXE [--rounds 3] [--old-pythonpath DIR]

OLD_EXE and NEW_EXE are copies of the front-end executable (worker/python/uringapi/_bin/
uringapi after `make setup` of each build). The workers come from .venv, or, for the old
build, from --old-pythonpath (a copy of the old build's worker/python, for changes on the
worker side). Every server: 1 worker (uringapi: 1 front-end thread),
benches/e2e/apps/ws_burst.py, each at its default scheduling policy (uringapi's is
SCHED_BATCH): uvicorn and granian are a reference here, not a fair comparison (that is
`make bench`). Rounds rotate the order of the four servers. Each round's figure is one
run after a warm-up of 1,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv/bin"
APPS = ROOT / "benches/e2e/apps"
PORT = 18795
N = 100_000


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def group_ticks(pgid: int) -> int:
    pids = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in map(int, pids):
        try:
            total += ticks(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


async def push(url: str, n: int) -> None:
    async with websockets.connect(f"{url}?push={n}", compression=None, max_size=None) as ws:
        got = 0
        async for _ in ws:
            got += 1
    if got != n:
        raise SystemExit(f"error: {got} of {n} messages arrived")


async def pull(url: str, n: int) -> None:
    async with websockets.connect(f"{url}?pull={n}", compression=None) as ws:
        message = "y" * 64
        for _ in range(n):
            await ws.send(message)
        await ws.send("done")
        if int(await ws.recv()) != n:
            raise SystemExit("error: the app counted another number of messages")


def command(name: str, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    ours = ["serve", "ws_burst:app", "--app-dir", str(APPS), "--port", str(PORT), "--workers", "1",
            "--threads", "1", "--python", str(VENV / "python"), "--ws-per-message-deflate", "false"]
    if name == "old":
        if args.old_pythonpath:
            env["PYTHONPATH"] = args.old_pythonpath
        return [args.old, *ours], env
    if name == "new":
        return [args.new, *ours], env
    if name == "uvicorn":
        return [str(VENV / "uvicorn"), "ws_burst:app", "--app-dir", str(APPS), "--port", str(PORT),
                "--ws-per-message-deflate", "false", "--log-level", "warning"], env
    return [str(VENV / "granian"), "--interface", "asgi", "ws_burst:app", "--working-dir", str(APPS),
            "--port", str(PORT), "--workers", "1", "--log-level", "warning"], env


def one(name: str, args: argparse.Namespace) -> None:
    cmd, env = command(name, args)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        time.sleep(3)
        url = f"ws://127.0.0.1:{PORT}/ws"
        for case in (push, pull):
            asyncio.run(case(url, 1000))
            cpu0, front0, t0 = group_ticks(server.pid), ticks(server.pid), time.monotonic()
            asyncio.run(case(url, N))
            wall = time.monotonic() - t0
            cpu, front = group_ticks(server.pid) - cpu0, ticks(server.pid) - front0
            print(f"{name:8} {case.__name__} wall {wall:.2f} s, server cpu {cpu} ticks"
                  f" (front end / main process {front})", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--old-pythonpath")
    args = p.parse_args()
    names = ["old", "new", "uvicorn", "granian"]
    for r in range(args.rounds):
        print(f"# round {r + 1}", flush=True)
        for name in names[r % 4:] + names[:r % 4]:
            one(name, args)


if __name__ == "__main__":
    main()
