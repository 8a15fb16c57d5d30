"""Start a server, wait until it answers correctly, stop it and its workers."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .cells import Cell

READY_TIMEOUT_S = 60.0
"""A server that has not answered the cell's request correctly by then is a failed run."""
STOP_TIMEOUT_S = 15.0
"""Grace period after SIGTERM before the whole process group gets SIGKILL."""


class ServerError(Exception):
    pass


Probe = Callable[[Cell, int], tuple[int, bytes]]
"""One request to a server: (status, body); raises OSError while it is not listening."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (all held open while choosing, so no repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@contextmanager
def running(
    cmd: list[str], cell: Cell, port: int, log: Path, env: dict[str, str], probe: Probe | None = None
) -> Iterator[int]:
    """Run `cmd` in its own session; yields its pid once `cell` is served correctly
    (asked with `probe`, by default one HTTP/1.1 request: `request`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **env}, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(proc, cell, port, log, probe or request)
        yield proc.pid
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], cell: Cell, port: int, log: Path, probe: Probe) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if _exited(proc.pid):
            raise ServerError(f"exited before serving:\n{_tail(log)}")
        try:
            status, body = probe(cell, port)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        wrong = cell.check(status, body)
        if wrong is None:
            return
        raise ServerError(f"wrong response for {cell.method} {cell.path}: {wrong}\n{_tail(log)}")
    raise ServerError(f"not ready after {READY_TIMEOUT_S:.0f}s ({last}):\n{_tail(log)}")


def request(cell: Cell, port: int) -> tuple[int, bytes]:
    """One request as the benchmark sends it; returns status and body."""
    if cell.tls:
        # The bench's own self-signed certificate: only the answer is checked here.
        ctx = ssl._create_unverified_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(cell.method, cell.path, body=cell.body or None, headers=cell.headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server (it stops its own workers), then SIGKILL whatever is left
    in its process group, which was created for this server alone.

    The leader is not reaped until after the group kill, so the group id cannot
    have been recycled for some other process in between.
    """
    if not _exited(proc.pid):
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not _exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _exited(pid: int) -> bool:
    """True once `pid` has exited; leaves it unreaped (a zombie) for Popen.wait."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(f"    | {line}" for line in text[-lines:]) or "    | (empty log)"


HOG_CODE = "while True:\n    pass\n"


@contextmanager
def cpu_hog() -> Iterator[int]:
    """A noisy neighbour: one process spinning on a CPU (SCHED_OTHER, the policy a
    neighbour would have) for as long as the block runs; yields its pid."""
    hog = subprocess.Popen(
        ["python3", "-c", HOG_CODE], stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield hog.pid
    finally:
        hog.kill()
        hog.wait(timeout=STOP_TIMEOUT_S)
