"""Workers that misbehave (tests/apps/misbehave_app.py): a handler that exits, one that
segfaults, one that overwrites its worker's shared-memory segment with random bytes, and
request/response bodies that are read slowly, through a deliberately small channel.

What DESIGN.md promises ("Trust", "A worker that dies"):
- the request on the broken worker gets 502 (never a 200 carrying garbage);
- the worker is killed if needed and respawned: the same slot serves again from a new pid;
- the front-end process survives, and its log names the reason;
- requests in flight on the other worker are not disturbed;
- a full ring or arena is backpressure: nothing is dropped or truncated.

Every wait below is a bounded retry loop (a hang guard, not a speed assertion).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import rawhttp
from harness import SERVER_KIND, Server, ServerFactory

APP = "misbehave_app:app"
GUARD = 20.0  # seconds: hang guard for every bounded wait
SLOT_SIZE = 65536
SMALL_CHANNEL = ("--channel-slots", "4", "--slot-size", str(SLOT_SIZE))
BIG = 8 << 20  # 8 MiB

uringapi_only = pytest.mark.uringapi_only


# ---------------------------------------------------------------------------------------
# helpers


def payload(n: int) -> bytes:
    """What GET /slow?n=... sends (same as misbehave_app.payload)."""
    return random.Random(n).randbytes(n)


def get(server: Server, target: str, timeout: float = GUARD) -> rawhttp.Response:
    with rawhttp.Connection(server.host, server.port, timeout=timeout) as c:
        return c.request("GET", target, [("Connection", "close")])


def read_events(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    return [(e, int(pid), idx) for e, pid, idx in (line.split() for line in lines)]


def wait_for_event(log: Path, event: str, pid: int | None = None) -> tuple[str, int, str]:
    deadline = time.monotonic() + GUARD
    while True:
        for ev in read_events(log):
            if ev[0] == event and (pid is None or ev[1] == pid):
                return ev
        assert time.monotonic() < deadline, f"{event!r} (pid {pid}) never logged: {read_events(log)}"
        time.sleep(0.02)


def probe_round(server: Server, n: int = 4) -> list[tuple[int, str, int | None]]:
    """n concurrent GET /pid?s=0.2 on separate connections: (status, index, pid) each.
    Concurrency matters: dispatch is by fewest requests in flight, so n >= threads + 1
    concurrent requests make some thread use both workers (idle ties also rotate)."""

    def one(_: int) -> tuple[int, str, int | None]:
        try:
            r = get(server, "/pid?s=0.2")
        except OSError as e:
            return (-1, repr(e), None)
        if r.status != 200:
            return (r.status, r.body[:200].decode("latin-1"), None)
        body = json.loads(r.body)
        return (200, body["index"], body["pid"])

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def wait_for_workers(server: Server, accept, what: str) -> dict[str, int]:
    """Probes until the {index: pid} map of the workers that answered satisfies
    `accept(map)`; returns the map. Also fails at once if the front end died."""
    deadline = time.monotonic() + GUARD
    seen: dict[str, int] = {}
    history: list = []
    while True:
        assert server.proc.poll() is None, f"front end exited ({server.proc.returncode})"
        results = probe_round(server, n=server.threads + 3)
        history.append(results)
        for status, idx, pid in results:
            if status == 200:
                seen[idx] = pid  # later rounds overwrite: the newest pid per slot wins
        if accept(seen):
            return seen
        assert time.monotonic() < deadline, f"never saw {what}; probe rounds: {history[-5:]}"
        time.sleep(0.05)


def group_pids(server: Server) -> set[int]:
    return set(server.group_members())


def wait_log(server: Server, pattern: str) -> str:
    return server.wait_log(pattern, GUARD)


def aim(server: Server, target: str, pid: int, attempts: int = 200):
    """Sends `target` (a crashing route) until it lands on worker `pid` (the app answers
    409 on any other worker). Returns (response or None, error if the connection closed
    without a response)."""
    sep = "&" if "?" in target else "?"
    for _ in range(attempts):
        with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
            c.send(rawhttp.build_request("GET", f"{target}{sep}pid={pid}", [("Connection", "close")]))
            try:
                resp = c.read_response()
            except socket.timeout:
                pytest.fail(f"GET {target} on worker {pid}: no answer within {GUARD} s")
            except (ConnectionError, OSError) as e:
                return None, repr(e)
        if resp.status == 409:
            assert json.loads(resp.body)["pid"] != pid
            continue
        return resp, None
    pytest.fail(f"GET {target}: never dispatched to worker pid {pid} in {attempts} tries")


def server_with_log(servers: ServerFactory, tmp_path: Path, threads: int, *extra: str):
    log = tmp_path / "events.log"
    server = servers.start(APP, workers=2, threads=threads, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)}, extra_args=tuple(extra))
    return server, log


# ---------------------------------------------------------------------------------------
# 1. a worker dies or breaks the channel mid-request


# (route, regex the front end's log line about that worker must match)
CRASHES = {
    "exit": r"worker exited.* pid={pid} status=exit status: 1\b",
    "segv": r"worker exited.* pid={pid} status=signal: 11 \(SIGSEGV\)",
    # The worker's own native layer sees the random ring counters when it sends the
    # response and exits 70; or the front end sees them first and kills it.
    "scribble": r"(worker exited.* pid={pid} status=exit status: 70"
                r"|killing worker that broke the channel contract.* pid={pid}\b)",
}


@uringapi_only
@pytest.mark.parametrize("threads", [1, 2], ids=["t1", "t2"])
@pytest.mark.parametrize("kind", list(CRASHES))
def test_worker_crash_mid_request(servers: ServerFactory, tmp_path: Path, kind: str,
                                  threads: int) -> None:
    server, log = server_with_log(servers, tmp_path, threads)
    front_pid = server.proc.pid
    before = wait_for_workers(server, lambda m: len(m) == 2, "both workers answering")

    # A request in flight on one worker (A): it runs until the test creates `release`,
    # so it is certainly still running when B breaks, however slow the machine.
    release = tmp_path / "release"
    sleeper = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    sleeper.send(rawhttp.build_request("GET", f"/hold?release={release}"))
    _, a_pid, a_index = wait_for_event(log, "hold-start")
    b_index = next(i for i in before if i != a_index)
    b_pid = before[b_index]
    assert before[a_index] == a_pid

    # ... while the other worker (B) misbehaves inside a handler.
    resp, closed = aim(server, f"/{kind}", b_pid)
    wait_for_event(log, kind, b_pid)
    # Observed: always a 502 from the front end, for scribble too. A 200 would mean the
    # front end sent bytes from a corrupt channel (or the crash never happened).
    assert closed is None, f"/{kind}: connection closed without a response ({closed})"
    assert resp.status == 502, f"/{kind}: status {resp.status}, body {resp.body[:300]!r}"

    # The request on A is still in flight (no answer, not cut off) ...
    ready, _, _ = select.select([sleeper.sock], [], [], 0)
    assert not ready, "the /hold request on the other worker was answered or closed early"

    # ... the slot is served again by a new process, the front end is the same one ...
    after = wait_for_workers(server, lambda m: m.get(b_index, b_pid) != b_pid,
                             f"a new pid for worker {b_index}")
    assert after[b_index] != b_pid
    assert server.proc.poll() is None and server.proc.pid == front_pid
    assert b_pid not in group_pids(server), f"crashed worker {b_pid} still alive"
    assert front_pid in group_pids(server)
    wait_log(server, CRASHES[kind].format(pid=b_pid))
    wait_log(server, rf"worker ready worker={b_index} pid={after[b_index]}\b")

    # ... and once released, the request on A completes normally, on the same
    # keep-alive connection.
    release.touch()
    with sleeper:
        r = sleeper.read_response()
        assert r.status == 200, r.body
        assert json.loads(r.body) == {"pid": a_pid, "index": a_index, "released": True}
        assert "close" not in r.connection_tokens()
        r = sleeper.request("GET", "/pid")
        assert r.status == 200, r.body
    assert server.proc.poll() is None


@uringapi_only
def test_requests_queued_behind_a_crash_are_served_by_its_replacement(
        servers: ServerFactory, tmp_path: Path) -> None:
    """A worker that dies takes down the request it was running, not the ones still waiting
    in its ring: those it never started are taken back and sent again, here (one worker)
    to the worker that replaces it. Its loop is blocked until it exits, and --stall-timeout
    is long, so no stall verdict takes them back first."""
    log = tmp_path / "events.log"
    server = servers.start(APP, workers=1, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)},
                           extra_args=("--stall-timeout", "60", "--timeout", "60"))
    a_pid = json.loads(get(server, "/pid").body)["pid"]
    crash = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    crash.send(rawhttp.build_request("GET", f"/exit?pid={a_pid}&hold=1"))
    wait_for_event(log, "exit", a_pid)
    with ThreadPoolExecutor(3) as pool:
        queued = list(pool.map(lambda _: get(server, "/pid"), range(3)))
    with crash:
        assert crash.read_response().status == 502
    for r in queued:
        assert r.status == 200, (r.status, r.body[:200])
        assert json.loads(r.body)["pid"] != a_pid
    wait_log(server, r"took back requests the exited worker had not started")


@uringapi_only
def test_an_apps_child_processes_neither_hold_the_channel_nor_stop_the_supervisor(
        servers: ServerFactory) -> None:
    """A worker whose app forked a helper process (multiprocessing's fork start method, as
    many apps do at start-up) dies: the helper still holds every fd the worker had, the
    status pipe's write end among them. The supervisor read that pipe to its end for the
    worker's last words, so it waited for the helper: no replacement, no signal handled.
    Now it reads what is there and replaces the worker. And a program the app runs with
    its fds inherited (close_fds=False) gets none of the channel's."""
    server = servers.start(APP, workers=1, probe_path="/pid", extra_args=("--queue-timeout", "30"))
    listing = get(server, "/child-fds").body.decode()
    assert "memfd:" not in listing and "[eventfd]" not in listing, listing
    first = json.loads(get(server, "/fork-helper?s=120").body)
    try:
        resp, closed = aim(server, "/exit", first["pid"])
        assert closed is None and resp.status == 502, (closed, resp)
        r = get(server, "/pid")  # waits in the queue for the replacement (30 s at most)
        assert r.status == 200, (r.status, r.body[:200])
        assert json.loads(r.body)["pid"] != first["pid"]
        wait_log(server, rf"worker exited.* pid={first['pid']} status=exit status: 1\b")
    finally:
        os.kill(first["helper"], signal.SIGKILL)


@uringapi_only
def test_a_process_forked_by_the_app_that_carries_on_is_ended_not_the_worker(
        servers: ServerFactory, tmp_path: Path) -> None:
    """A handler calls os.fork() and the child carries on as if it were the worker: it
    answers the request it was forked in, through its copy of the worker's channel. Two
    processes on one channel corrupted the rings: the worker died with everything it was
    serving (a 500, a 502) and the child lived on, an orphan reading requests. Now the
    child is ended at its first touch of the channel, with the reason logged; the parent
    answers, and a request in flight beside it is served by the same worker."""
    server = servers.start(APP, workers=1, probe_path="/pid")
    worker = json.loads(get(server, "/pid").body)["pid"]
    release = tmp_path / "release"
    held: dict[str, rawhttp.Response] = {}

    def hold() -> None:
        held["r"] = get(server, f"/hold?release={release}")

    beside = threading.Thread(target=hold)
    beside.start()
    try:
        r = get(server, "/fork-and-continue")
        assert r.status == 200, (r.status, r.body[:300])
        body = json.loads(r.body)
        assert body["from"] == "parent" and body["pid"] == worker, body
        assert body["child_status"] == 70, body
        wait_log(server, rf"process {body['child']} was forked from this worker \(os.fork\(\) "
                         r"in the app\) and went on to use the worker's channel")
    finally:
        release.touch()
        beside.join(60)
    assert held["r"].status == 200 and json.loads(held["r"].body)["pid"] == worker
    for _ in range(20):
        assert json.loads(get(server, "/pid").body)["pid"] == worker
    assert "worker exited" not in server.stderr(), server.stderr_tail()


@uringapi_only
def test_scribble_detected_by_front_end(servers: ServerFactory, tmp_path: Path) -> None:
    """The worker overwrites its segment and then blocks its interpreter (no poll, no
    heartbeat, no send): the front end alone must see the corrupt ring when it next uses
    the channel, kill the worker (SIGKILL, not a self-exit), fail its request with 502,
    and respawn it. The worker would otherwise sleep for 60 s: longer than every guard."""
    server, log = server_with_log(servers, tmp_path, 1)
    front_pid = server.proc.pid
    before = wait_for_workers(server, lambda m: len(m) == 2, "both workers answering")
    b_index, b_pid = sorted(before.items())[0]

    result: dict = {}

    def scribble() -> None:
        try:
            result["resp"], result["closed"] = aim(server, "/scribble?hold=60", b_pid)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            result["error"] = e

    t = threading.Thread(target=scribble, daemon=True)
    t.start()
    # "scribble" is logged as the overwrite starts: the front end reads B's slot-return ring
    # every 0.25 s even without requests (its after-burst slot trim, SlotPool::trim), so it
    # may see the corrupt ring and kill B before the overwrite ends and "scribbled" is logged.
    wait_for_event(log, "scribble", b_pid)

    # New requests make the front end touch B's channel (probe_round spreads them over
    # both workers); it must notice, kill B and carry on with a new B.
    after = wait_for_workers(server, lambda m: m.get(b_index, b_pid) != b_pid,
                             f"a new pid for worker {b_index}")
    t.join(GUARD)
    assert not t.is_alive(), "the /scribble request never got an answer"
    if "error" in result:
        raise result["error"]
    assert result["closed"] is None, f"connection closed without a response: {result['closed']}"
    assert result["resp"].status == 502, (result["resp"].status, result["resp"].body[:300])

    wait_log(server, rf"killing worker that broke the channel contract worker={b_index} pid={b_pid}\b")
    wait_log(server, rf"worker exited.* pid={b_pid} status=signal: 9 \(SIGKILL\)")
    assert server.proc.poll() is None and server.proc.pid == front_pid
    assert b_pid not in group_pids(server)
    assert after[b_index] != b_pid


# ---------------------------------------------------------------------------------------
# 2. backpressure through a 4-slot channel: nothing dropped, nothing truncated


@pytest.fixture(scope="module")
def small_channel(servers: ServerFactory) -> Server:
    extra = SMALL_CHANNEL if SERVER_KIND == "uringapi" else ()
    return servers.start(APP, workers=2, threads=1, probe_path="/pid", extra_args=extra)


def test_slow_reader_upload_is_exact(small_channel: Server) -> None:
    """8 MiB with a Content-Length, read by the app with a sleep between receive()
    calls: the channel (4 x 64 KiB slots) fills again and again; the app's sha256 and
    byte count must match what was sent. Meanwhile the other worker keeps serving."""
    body = os.urandom(BIG)
    with rawhttp.Connection(small_channel.host, small_channel.port, timeout=60) as c:
        c.send(rawhttp.build_request(
            "POST", "/slowread?delay=0.002",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG)),
             ("Connection", "close")]))
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                c.sock.sendall(body)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        # While the slow upload holds one worker, the other one answers at once.
        r = get(small_channel, "/pid")
        assert r.status == 200, r.body
        t.join(60)
        assert not t.is_alive(), "the upload never finished: the server stopped reading"
        assert errors == []
        resp = c.read_response("POST")
    assert resp.status == 200, resp.body[:300]
    got = json.loads(resp.body)
    assert got["bytes"] == BIG, got
    assert got["sha256"] == hashlib.sha256(body).hexdigest(), got
    if SERVER_KIND == "uringapi":
        # The body came through the channel a slot at most per record, and a message
        # joins at most the 4 records of the body window, so the 4 slots were refilled
        # again and again while the app slept between receive() calls.
        assert got["chunks"] >= BIG // (4 * SLOT_SIZE), got


class SlowConnection(rawhttp.Connection):
    """A client that reads 64 KiB at a time with a pause between reads, through a small
    receive buffer, so that the server's sends block and the channel stays full."""

    def __init__(self, host: str, port: int, pause: float, timeout: float = 60) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.host = host
        self._buf = b""
        self.pause = pause
        self.reads = 0

    def _fill(self) -> bool:
        time.sleep(self.pause)
        data = self.sock.recv(65536)
        if not data:
            return False
        self.reads += 1
        self._buf += data
        return True


def first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("once", [0, 1], ids=["streamed-chunked", "one-body-content-length"])
def test_slow_client_download_is_exact(small_channel: Server, once: int) -> None:
    """8 MiB read by a client that pauses between 64 KiB reads: the worker must wait for
    slots to come back; the client must get exactly the bytes the app sent."""
    expected = payload(BIG)
    with SlowConnection(small_channel.host, small_channel.port, pause=0.005) as c:
        resp = c.request("GET", f"/slow?n={BIG}&chunk=262144&once={once}",
                         [("Connection", "close")])
        reads = c.reads
    assert resp.status == 200, resp.body[:300]
    assert resp.chunked == (once == 0), resp.headers
    assert len(resp.body) == BIG, f"got {len(resp.body)} of {BIG} bytes"
    if resp.body != expected:
        pytest.fail(f"body differs from offset {first_difference(resp.body, expected)}")
    assert reads >= BIG // 65536  # the client really did read it slowly


@pytest.mark.parametrize("once", [0, 1], ids=["streamed-chunked", "one-body-content-length"])
def test_clients_leaving_mid_download_leave_the_server_serving(small_channel: Server,
                                                               once: int) -> None:
    """Clients that read a little of an 8 MiB download and then reset the connection,
    while the worker has more body queued for them: the server drops what was queued
    and goes on serving every worker (a queued piece once took the front end down)."""
    for _ in range(6):
        sock = socket.create_connection((small_channel.host, small_channel.port), timeout=GUARD)
        try:
            sock.sendall(f"GET /slow?n={BIG}&chunk=65536&once={once} HTTP/1.1\r\n"
                         "Host: t\r\n\r\n".encode())
            got = 0
            while got < 200_000:
                chunk = sock.recv(65536)
                assert chunk, "closed before the download was under way"
                got += len(chunk)
            time.sleep(0.05)  # the worker fills the channel meanwhile
        finally:
            # SO_LINGER 0: close with a reset, so the front end's next write fails at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
    assert small_channel.proc.poll() is None, small_channel.stderr_tail()
    seen = wait_for_workers(small_channel, lambda m: len(m) == 2, "both workers answering")
    assert len(seen) == 2
    whole = get(small_channel, f"/slow?n={1 << 20}&chunk=65536&once={once}")
    assert (whole.status, whole.body) == (200, payload(1 << 20))


def stalled_download(server: Server, n: int, once: int) -> SlowConnection:
    """A client that asks for an n-byte download, reads its first 256 KiB, then stops."""
    c = SlowConnection(server.host, server.port, pause=0, timeout=GUARD)
    c.send(rawhttp.build_request("GET", f"/slow?n={n}&chunk=65536&once={once}",
                                 [("Connection", "close")]))
    while len(c._buf) < 256 << 10:
        assert c._fill(), "closed before the download was under way"
    return c


@pytest.mark.parametrize("once", [0, 1], ids=["streamed-chunked", "one-body-content-length"])
def test_clients_that_stop_reading_hold_up_no_other_request(servers: ServerFactory,
                                                            once: int) -> None:
    """One worker, 24 clients that stop reading a 16 MiB download part way (phones on a
    bad network, clients that hang): the other requests on that worker are answered as
    usual, and a stalled download read again later is exact. Before, the stalled responses
    took every response slot of the worker (8 MiB by default): four of them at first, then
    sixteen (one response window each); every other request on it waited for those
    clients. Under uvicorn only the stalled responses wait."""
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid")
    n = 16 << 20
    # 24 windows of 8 records: more than the worker's 128 slots if the stalled responses
    # held them.
    stalled = [stalled_download(server, n, once) for _ in range(24)]
    time.sleep(0.3)  # the worker sends what it may meanwhile
    for _ in range(5):
        r = get(server, "/pid")
        assert r.status == 200, (r.status, r.body[:200])
    with stalled[0] as c:
        resp = c.read_response()
    assert resp.status == 200 and len(resp.body) == n, (resp.status, len(resp.body))
    if resp.body != payload(n):
        pytest.fail(f"body differs from offset {first_difference(resp.body, payload(n))}")
    for c in stalled[1:]:
        c.close()
    assert get(server, "/pid").status == 200


def read_to_eof(sock: socket.socket) -> int:
    """Bytes read until the peer closes (a reset counts as closed)."""
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    return got


@uringapi_only  # uvicorn has no such timeout: the client holds its response for ever
@pytest.mark.parametrize("source", ["app", "file"])
def test_a_client_that_reads_nothing_is_dropped_after_the_body_timeout(
        servers: ServerFactory, tmp_path: Path, source: str) -> None:
    """A client that takes none of its response for --timeout-body-read (the pause allowed
    in a body, either way) is disconnected, and with it goes what it held: a slot or up to a
    window of the front end's memory, or a file. Before, nothing ended such a connection.
    Read after four such timeouts, the 32 MiB download is cut short."""
    n = 32 << 20
    (tmp_path / "big.bin").write_bytes(payload(n))
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid", extra_args=(
        "--timeout-body-read", "1", "--static-mount", f"/files={tmp_path}"))
    target = f"/slow?n={n}&chunk=65536&once=1" if source == "app" else "/files/big.bin"
    with socket.create_connection((server.host, server.port), timeout=GUARD) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(4.0)  # reads nothing
        got = read_to_eof(s)
    assert 0 < got < n, f"{got} of {n} bytes: the server waited for the client"
    # A client that reads, however slowly, is not cut: it takes bytes well within each
    # timeout.
    with SlowConnection(server.host, server.port, pause=0.2, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", f"/slow?n={1 << 20}&chunk=65536&once=1",
                                     [("Connection", "close")]))
        resp = c.read_response()
    assert resp.status == 200 and resp.body == payload(1 << 20)
    assert get(server, "/pid").status == 200


# ---------------------------------------------------------------------------------------
# a response body that disagrees with its own Content-Length


@uringapi_only
@pytest.mark.parametrize("declared,sent,pieces,what", [
    (10, 5, 1, "shorter"), (10, 5, 3, "shorter"),
    (5, 10, 1, "longer"), (5, 12, 4, "longer"),
])
def test_body_that_disagrees_with_content_length_closes_the_connection(
        servers: ServerFactory, declared: int, sent: int, pieces: int, what: str) -> None:
    """Never a corrupt stream: a body cut short gets the head and the bytes sent, then a
    closed connection (so the client can tell); a body that overruns in its first message
    gets a 500 instead (nothing had gone out yet), and one that overruns later is cut at
    the declared length and closed. Never bytes that would read as the next response. The
    error is logged, and the worker goes on serving."""
    server = servers.start(APP, probe_path="/pid")
    target = f"/wrong-length?declared={declared}&sent={sent}&pieces={pieces}"
    request = (f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"
               "GET /pid HTTP/1.1\r\nHost: t\r\n\r\n").encode()  # a pipelined second request
    with socket.create_connection((server.host, server.port), timeout=GUARD) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with the pipelined request unread: what arrived before counts
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"HTTP/1.1" not in body, "a second response after the broken one"
    if what == "longer" and pieces == 1:
        assert head.startswith(b"HTTP/1.1 500 "), received[:300]
    else:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), received[:300]
        assert f"\r\ncontent-length: {declared}".encode() in head.lower()
        if what == "shorter":
            assert body == b"z" * sent
        else:  # the pieces that fitted went out whole; the one that overran did not
            assert body == b"z" * (declared // -(-sent // pieces) * -(-sent // pieces)), body
    deadline = time.monotonic() + GUARD
    while f"response body {what} than its content-length" not in server.stderr():
        assert time.monotonic() < deadline, server.stderr_tail()
        time.sleep(0.02)
    assert get(server, "/pid").status == 200



@uringapi_only
def test_response_head_larger_than_a_slot_is_a_500_that_says_why(servers: ServerFactory) -> None:
    """A response head must fit in one shared-memory slot (64 KiB by default). One that
    does is sent whole; one that does not is a 500 (uvicorn would send it), and the log
    names the limit and the flag that moves it. The worker goes on serving."""
    server = servers.start(APP, probe_path="/pid")
    fits = get(server, "/big-head?size=60000")
    assert fits.status == 200 and fits.body == b"ok"
    assert fits.header("x-big") == "h" * 60000
    assert get(server, "/big-head?size=70000").status == 500
    deadline = time.monotonic() + GUARD
    while "raise --slot-size" not in server.stderr():
        assert time.monotonic() < deadline, server.stderr_tail()
        time.sleep(0.02)
    assert "needs 700" in server.stderr(), server.stderr_tail()
    assert get(server, "/pid").status == 200
