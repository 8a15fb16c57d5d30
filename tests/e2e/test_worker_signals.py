"""Signals that reach workers without going through the front end, with requests in flight.

- `kill -TERM <worker pid>`, as a gunicorn user recycles a worker: the worker asks the front
  end for a replacement and serves on; once the replacement is ready the old worker
  retires like in a rolling restart. An upload and a download in flight on it finish
  intact; nothing is counted as a crash.
- SIGTERM to the whole process group (systemd's default KillMode=control-group, `kill
  -TERM -PGID`): the workers keep serving while the front end drains, so the requests in
  flight finish, and the server exits 0.
- SIGKILL to the front end (the OOM killer, `kill -9`): its workers do not outlive it.
- SIGUSR2 to the whole group: logged, nothing stops.

Each in-flight request is driven by hand on a raw socket: the upload sends part of its
chunked body before the signal and the rest after; the download reads its first MiB before
and the rest after. Every wait is bounded (a hang guard, not a speed assertion).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
import zlib
from pathlib import Path

import pytest

from harness import APPS_DIR, Server, ServerFactory

sys.path.insert(0, str(APPS_DIR))
from echo_app import download_piece  # noqa: E402  (the stream the app sends, rebuilt here)

pytestmark = pytest.mark.uringapi_only  # the process model is uringapi's

APP = "echo_app:app"
GUARD = 30.0
PIECE = 1 << 20
DOWNLOAD = 24 * PIECE
UPLOAD_CHUNK = b"u" * 4000
UPLOAD_CHUNKS = 40


def workers_of(server: Server) -> set[int]:
    return set(server.group_members()) - {server.proc.pid}


def wait_log(server: Server, pattern: str) -> str:
    return server.wait_log(pattern, GUARD)


class InFlight:
    """A chunked upload half sent and a download partly read, both on one worker (the
    server has one, or they are the first two requests of an idle server)."""

    def __init__(self, server: Server) -> None:
        self.down = socket.create_connection((server.host, server.port), timeout=GUARD)
        self.down.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        self.down.sendall(f"GET /?mode=download&size={DOWNLOAD}&length=1 HTTP/1.1\r\n"
                          "Host: t\r\nConnection: close\r\n\r\n".encode())
        self.received = b""
        while len(self.received) < PIECE:
            chunk = self.down.recv(1 << 16)
            assert chunk, "download closed early"
            self.received += chunk
        self.up = socket.create_connection((server.host, server.port), timeout=GUARD)
        self.up.sendall(b"POST /?mode=count HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
        self.sent = 0
        self._send_chunks(UPLOAD_CHUNKS // 2)

    def _send_chunks(self, n: int) -> None:
        for _ in range(n):
            self.up.sendall(b"%x\r\n%s\r\n" % (len(UPLOAD_CHUNK), UPLOAD_CHUNK))
            self.sent += 1
            time.sleep(0.01)

    def finish(self) -> None:
        """Sends the rest of the upload, reads both responses, and checks every byte."""
        self._send_chunks(UPLOAD_CHUNKS - self.sent)
        self.up.sendall(b"0\r\n\r\n")
        down = self.received + read_all(self.down)
        head, _, body = down.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), down[:300]
        assert f"content-length: {DOWNLOAD}".encode() in head.lower()
        assert len(body) == DOWNLOAD, f"{len(body)} of {DOWNLOAD} bytes"
        want = zlib.crc32(b"".join(download_piece(i, PIECE) for i in range(DOWNLOAD // PIECE)))
        assert zlib.crc32(body) == want, "the download's bytes differ"

        up = read_all(self.up)
        head, _, body = up.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), up[:300]
        expected = UPLOAD_CHUNK * UPLOAD_CHUNKS
        assert json.loads(body) == {"bytes": len(expected), "crc32": zlib.crc32(expected)}


def read_all(sock: socket.socket) -> bytes:
    out = b""
    with sock:
        while chunk := sock.recv(1 << 16):
            out += chunk
    return out


def test_sigterm_to_a_worker_replaces_it_and_loses_nothing(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=1, threads=1)
    (old,) = workers_of(server)
    flight = InFlight(server)
    os.kill(old, signal.SIGTERM)
    wait_log(server, rf"worker got a SIGTERM the front end did not send.* pid={old}\b")
    wait_log(server, rf"replacement ready; retiring worker worker=\d+ pid={old}\b")
    # The replacement takes new requests while the old worker finishes its own.
    fresh = None
    deadline = time.monotonic() + GUARD
    while fresh is None:
        assert time.monotonic() < deadline, server.stderr_tail()
        fresh = next(iter(workers_of(server) - {old}), None)
    with socket.create_connection((server.host, server.port), timeout=GUARD) as c:
        c.sendall(b"GET /?mode=empty HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_all(c).startswith(b"HTTP/1.1 200 ")
    assert old in workers_of(server), "the old worker left before its requests were done"
    flight.finish()
    wait_log(server, rf"retired worker exited worker=\d+ pid={old} status=exit status: 0")
    log = server.stderr()
    assert "respawning" not in log and "WARN" not in log and "ERROR" not in log, log
    assert server.proc.poll() is None


def test_sigterm_to_the_whole_group_lets_requests_in_flight_finish(
        servers: ServerFactory) -> None:
    server = servers.start(APP, workers=2, threads=1)
    flight = InFlight(server)
    os.killpg(server.pgid, signal.SIGTERM)
    wait_log(server, r"shutting down: draining connections")
    flight.finish()
    assert server.wait_exit(60) == 0, server.diagnostics()
    assert not server.wait_group_gone(30), server.diagnostics()
    log = server.stderr()
    assert "respawning" not in log and "WARN" not in log and "ERROR" not in log, log


def test_workers_do_not_outlive_a_killed_front_end(servers: ServerFactory) -> None:
    server = servers.start(APP, workers=2, threads=1)
    workers = workers_of(server)
    assert len(workers) == 2
    server.proc.kill()
    server.proc.wait(GUARD)
    deadline = time.monotonic() + GUARD
    while alive := {p for p in workers if Path(f"/proc/{p}").exists()
                    and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1][:3]}:
        assert time.monotonic() < deadline, f"workers {alive} outlived the front end"
        time.sleep(0.05)


def test_a_stopped_worker_is_replaced_with_its_python_stack_printed(servers: ServerFactory) -> None:
    """SIGSTOP to a worker (an operator's `kill -STOP`): past --timeout the front end sends
    SIGABRT, which faulthandler turns into the worker's Python stack, but a stopped process
    acts on it only once continued: it used to sit out the 5 s to the SIGKILL and print
    nothing. The front end now continues it after the SIGABRT."""
    server = servers.start(APP, workers=2, threads=1, extra_args=("--timeout", "1"))
    victim = min(workers_of(server))
    os.kill(victim, signal.SIGSTOP)
    line = wait_log(server, rf"worker exited; respawning .*pid={victim}\b.*")
    assert "SIGABRT" in line, server.diagnostics()
    assert "Fatal Python error: Aborted" in server.stderr(), server.diagnostics()


def test_sigusr2_to_the_whole_group_is_logged_and_ends_nothing(servers: ServerFactory) -> None:
    """SIGUSR2 (gunicorn's binary upgrade) has no meaning here; its default action used to
    end the front end without a word, and every worker with it when sent to the group."""
    server = servers.start(APP, workers=2, threads=1)
    workers = workers_of(server)
    flight = InFlight(server)
    os.killpg(server.pgid, signal.SIGUSR2)
    wait_log(server, r"SIGUSR2 ignored")
    flight.finish()
    with socket.create_connection((server.host, server.port), timeout=GUARD) as c:
        c.sendall(b"GET /?mode=empty HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_all(c).startswith(b"HTTP/1.1 200 ")
    assert server.proc.poll() is None and workers_of(server) == workers, server.diagnostics()
    assert "respawning" not in server.stderr(), server.diagnostics()


def test_each_sigttin_and_sigttou_counts(servers: ServerFactory) -> None:
    """Three `kill -TTIN` in a row are three more workers, as under gunicorn; the front end
    kept one flag per signal, so those that came within one 10 ms look at it made one."""
    server = servers.start(APP, workers=1, threads=1)

    def burst(sig: int) -> None:
        for _ in range(3):
            os.kill(server.proc.pid, sig)
            time.sleep(0.002)

    def count(pattern: str, n: int) -> None:
        deadline = time.monotonic() + GUARD
        while (found := len(re.findall(pattern, server.stderr()))) < n:
            assert time.monotonic() < deadline, f"{found} of {n} x {pattern!r}\n{server.stderr()}"
            time.sleep(0.05)

    burst(signal.SIGTTIN)
    count(r"INFO worker ready worker=\d", 3)
    assert len(workers_of(server)) == 4, server.diagnostics()
    burst(signal.SIGTTOU)
    count(r"SIGTTOU: retiring a worker", 3)
    deadline = time.monotonic() + GUARD
    while len(workers_of(server)) != 1:
        assert time.monotonic() < deadline, server.diagnostics()
        time.sleep(0.05)
