"""Running the server under test as a subprocess: command line, environment,
readiness wait, stop, and cleanup of its whole process group.

Which server runs is chosen by URINGAPI_TEST_SERVER:
  uringapi (default)  the `uringapi` binary: URINGAPI_BIN, else <repo>/.venv/bin/uringapi
  uvicorn             `python -m uvicorn --loop uvloop --http httptools`, to check that the
                      tests themselves are right.
"""

from __future__ import annotations

import atexit
import functools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rawhttp

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS_DIR = REPO_ROOT / "tests" / "apps"
HOST = "127.0.0.1"

SERVER_KIND = os.environ.get("URINGAPI_TEST_SERVER", "uringapi").strip().lower()
URINGAPI_BIN = Path(os.environ.get("URINGAPI_BIN") or REPO_ROOT / ".venv" / "bin" / "uringapi")

# Hang guards, not speed assertions: generous so a loaded 2-core CI box never trips them.
LISTEN_TIMEOUT = 20.0  # connect retry until the server listens
READY_TIMEOUT = 20.0  # then until one HTTP request gets a non-5xx answer
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 15.0  # SIGTERM -> exit, before SIGKILL


#: Where the kernel takes the local port of every connect() and of every bind to port 0.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()  # ports this process handed out: an earlier server may still hold one


@functools.cache
def _outside_ephemeral_range() -> tuple[int, ...]:
    try:
        low, high = map(int, EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return (*range(10000, min(low, 65536)), *range(max(high + 1, 10000), 65536))


def free_port() -> int:
    """A port no socket has, chosen outside the kernel's ephemeral range where there is
    room. A port from inside it can be taken between this call and the server's bind: by
    any client's connect() (an established or TIME_WAIT client socket keeps a listener off
    its port for a minute) or by anyone's bind to port 0."""
    outside = _outside_ephemeral_range()
    for _ in range(200 if outside else 0):
        port = random.choice(outside)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))  # no SO_REUSEADDR: any socket on the port refuses it
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room outside the range
        s.bind((HOST, 0))
        _given.add(s.getsockname()[1])
        return s.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user who activated the venv the tests run in."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
        env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def server_command(
    app: str | None,
    port: int,
    workers: int,
    threads: int,
    app_dir: Path | None,
    log_level: str,
    extra_args: tuple[str, ...],
) -> list[str]:
    common = ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    common += ["--log-level", log_level]
    if app_dir is not None:
        common += ["--app-dir", str(app_dir)]
    if SERVER_KIND == "uringapi":
        return [str(URINGAPI_BIN), "serve", *([app] if app else []), *common,
                "--threads", str(threads), *extra_args]
    assert app, "uvicorn has no built-in app"
    # uvicorn has no --threads: one event loop per worker process.
    return [sys.executable, "-m", "uvicorn", app, *common,
            "--loop", "uvloop", "--http", "httptools", *extra_args]


class Server:
    """One server process (and, through its process group, its workers)."""

    def __init__(self, cmd: list[str], port: int, workers: int, threads: int,
                 log_dir: Path, env: dict[str, str]):
        self.kind = SERVER_KIND
        self.cmd = cmd
        self.host = HOST
        self.port = port
        self.workers = workers
        self.threads = threads
        self.base_url = f"http://{HOST}:{port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / "stderr.log"
        self.stdout_path = log_dir / "stdout.log"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            # Own session: the group id is the server's pid, so teardown can find and
            # kill workers even if the server itself is gone.
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, cwd=log_dir, start_new_session=True,
            )
        self.pgid = self.proc.pid
        self.returncode: int | None = None
        self.left_behind: list[int] = []  # group members alive after the server exited
        _live_groups.add(self.pgid)

    def describe(self) -> str:
        return f"{self.kind} workers={self.workers} threads={self.threads} port={self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 80) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float) -> str:
        """The first stderr line matching regex `pattern` (a bounded wait: logging is
        asynchronous)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr().splitlines():
                if rx.search(line):
                    return line
            assert time.monotonic() < deadline, (
                f"no log line matches {pattern!r}\n{self.stderr_tail()}")
            time.sleep(0.02)

    def diagnostics(self) -> str:
        return (f"command: {' '.join(self.cmd)}\nexit code: {self.proc.poll()}\n"
                f"--- stderr (tail) ---\n{self.stderr_tail()}\n"
                f"--- stdout (tail) ---\n{chr(10).join(self.stdout().splitlines()[-20:])}")

    def wait_ready(self, probe_path: str | None = "/") -> None:
        """Bounded connect retry; then, if probe_path is set, one HTTP request that gets
        an answer below 500 (any status: it only shows that a worker answers)."""
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited before listening\n{self.diagnostics()}", pytrace=False)
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not listen within {LISTEN_TIMEOUT}s\n{self.diagnostics()}",
                            pytrace=False)
            time.sleep(POLL_INTERVAL)
        if probe_path is None:
            return
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited while starting\n{self.diagnostics()}", pytrace=False)
            try:
                with rawhttp.Connection(self.host, self.port, timeout=READY_TIMEOUT) as c:
                    resp = c.request("GET", probe_path, [("Connection", "close")])
                if resp.status < 500:
                    return
                last = f"status {resp.status}"
            except (OSError, AssertionError) as e:
                last = repr(e)
            time.sleep(POLL_INTERVAL)
        self.kill()
        pytest.fail(f"server never answered GET {probe_path} below 500 ({last})\n"
                    f"{self.diagnostics()}", pytrace=False)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the server still runs after `timeout` seconds."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def group_members(self) -> list[int]:
        """Live (non-zombie) processes still in the server's process group."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command: state ppid pgrp ...
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                pids.append(int(entry))
        return pids

    def wait_group_gone(self, timeout: float) -> list[int]:
        """Waits (bounded) for every process of the group to go; returns those left."""
        deadline = time.monotonic() + timeout
        while (left := self.group_members()) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        return left

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Sends `sig` to the server, waits up to `timeout` s, else SIGKILLs the group.
        Returns the server's exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if self.wait_exit(timeout) is None:
                self.kill()
        self.returncode = self.proc.wait(timeout=STOP_TIMEOUT)
        self._reap_group()
        return self.returncode

    def _reap_group(self) -> None:
        # Workers still alive after the server exited would outlive the test run:
        # note them for tests to assert on, then kill them.
        self.left_behind = self.wait_group_gone(5.0)
        if self.left_behind:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _live_groups.discard(self.pgid)

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=STOP_TIMEOUT)
        self._reap_group()



_live_groups: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_live_groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ServerFactory:
    def __init__(self, log_root: Path):
        self.log_root = log_root
        self.servers: list[Server] = []

    def spawn(self, app: str | None, *, workers: int = 1, threads: int = 1,
              app_dir: Path | None = APPS_DIR, extra_args: tuple[str, ...] = (),
              env: dict[str, str] | None = None, log_level: str = "info",
              port: int | None = None) -> Server:
        """Starts a server without waiting for it (for tests of failing startups)."""
        port = port or free_port()
        cmd = server_command(app, port, workers, threads, app_dir, log_level, extra_args)
        name = f"{len(self.servers):03d}-{(app or 'demo').replace(':', '-')}-w{workers}t{threads}"
        server = Server(cmd, port, workers, threads, self.log_root / name, server_env(env))
        self.servers.append(server)
        return server

    def start(self, app: str | None, *, probe_path: str | None = "/", **kwargs) -> Server:
        """Starts a server and returns once it answers."""
        server = self.spawn(app, **kwargs)
        server.wait_ready(probe_path)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


