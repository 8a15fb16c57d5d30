"""Running uringapi in production: what an operator sees when workers die, stall, get
replaced, recycled or added, when requests pile up or run too long, and when clients leave.
The app is tests/apps/ops_app.py; it writes what happens inside the workers to an event log.

What is promised (`uringapi serve --help`, DESIGN.md):
- a worker killed under load fails only the requests in flight on it (502), and is respawned;
- SIGTERM drains: requests in flight finish, lifespan shutdown runs, exit 0;
- SIGHUP replaces every worker, one at a time, without failing a request;
- a worker whose event loop stalls (--stall-timeout) gets no new requests, and the log names
  the request that blocks it; one silent past --timeout is killed with SIGABRT (its Python
  stack in the log) and respawned;
- --limit-concurrency queues requests; past --queue-timeout, or past --limit-queue at once,
  they get 503 with Retry-After; --timeout-request answers 504 (or closes a started
  response) and cancels the app's task;
- --limit-max-requests, --workers-lifetime and --workers-max-rss recycle workers without
  failing a request; SIGTTIN/SIGTTOU add and remove workers, never below one;
- --request-id passes X-Request-ID to the app; a client that leaves mid-request is seen by
  the app as http.disconnect, and its worker is free again.

Every wait is a bounded retry loop (a hang guard, not a speed assertion). Where a test needs
"before", it compares the order in which things happened, never a duration.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import rawhttp
from harness import SERVER_KIND, Server, ServerFactory

APP = "ops_app:app"
GUARD = 20.0  # seconds: hang guard for every bounded wait

uringapi_only = pytest.mark.uringapi_only


# ---------------------------------------------------------------------------------------
# helpers


class Events:
    """The app's event log: lines "<event> <pid> [tag]"."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, int, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            event, pid, *rest = line.split()
            out.append((event, int(pid), rest[0] if rest else "-"))
        return out

    def of(self, event: str, tag: str | None = None) -> list[tuple[str, int, str]]:
        return [e for e in self.read() if e[0] == event and (tag is None or e[2] == tag)]

    def wait(self, event: str, tag: str | None = None,
             count: int = 1) -> list[tuple[str, int, str]]:
        deadline = time.monotonic() + GUARD
        while True:
            found = self.of(event, tag)
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, (
                f"{count} x {event!r} (tag {tag}) never logged; events: {self.read()[-20:]}")
            time.sleep(0.02)


def start(servers: ServerFactory, tmp_path: Path, *extra: str, workers: int = 1,
          threads: int = 1) -> tuple[Server, Events]:
    log = tmp_path / "events.log"
    server = servers.start(APP, workers=workers, threads=threads, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)}, extra_args=extra)
    return server, Events(log)


def get(server: Server, target: str, headers: list[tuple[str, str]] | None = None,
        timeout: float = GUARD) -> rawhttp.Response:
    with rawhttp.Connection(server.host, server.port, timeout=timeout) as c:
        return c.request("GET", target, [*(headers or []), ("Connection", "close")])


def pid_of(resp: rawhttp.Response) -> int:
    assert resp.status == 200, (resp.status, resp.body[:300])
    return json.loads(resp.body)["pid"]


def worker_pids(server: Server) -> set[int]:
    """The live worker processes: the server's process group, minus the server."""
    return set(server.group_members()) - {server.proc.pid}


def wait_until(check: Callable[[], object], what: str, server: Server | None = None):
    """Polls `check` until it returns something truthy (returned); fails after GUARD."""
    deadline = time.monotonic() + GUARD
    while True:
        if server is not None:
            assert server.proc.poll() is None, f"server exited ({server.proc.returncode})"
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def wait_workers(server: Server, accept: Callable[[set[int]], bool], what: str) -> set[int]:
    """Waits until the live worker pids satisfy `accept`; returns them."""
    def check() -> set[int] | None:
        pids = worker_pids(server)
        return pids if accept(pids) else None

    return wait_until(check, what, server)


def log_lines(server: Server, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [line for line in server.stderr().splitlines() if rx.search(line)]


def assert_recycled_once(server: Server, flag: str) -> None:
    """Workers were recycled for `flag`, each named once (not again while it is replaced)."""
    pids = re.findall(r"recycling worker: .*\(" + flag + r"\).*pid=(\d+)", server.stderr())
    assert pids and len(pids) == len(set(pids)), server.stderr_tail()


def wait_log(server: Server, pattern: str) -> str:
    """The first stderr line matching regex `pattern` (bounded wait)."""
    return wait_until(lambda: next(iter(log_lines(server, pattern)), None),
                      f"a log line matching {pattern!r}")


def probe_round(server: Server, n: int = 4, s: float = 0.2) -> list[int | str]:
    """n concurrent GET /pid?s=... on separate connections: the answering pid of each, or a
    description of what went wrong. Concurrency spreads them over the workers (dispatch is
    by fewest requests in flight; sequential requests would all go to one worker)."""

    def one(_: int) -> int | str:
        try:
            r = get(server, f"/pid?s={s}")
        except OSError as e:
            return repr(e)
        return pid_of(r) if r.status == 200 else f"status {r.status}"

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def wait_serving(server: Server, accept: Callable[[set[int]], bool], what: str) -> set[int]:
    """Probes until the set of pids that answered in one round satisfies `accept`; every
    probe must succeed."""

    def check() -> set[int] | None:
        got = probe_round(server)
        assert all(isinstance(p, int) for p in got), f"a probe failed: {got}"
        pids = set(got)
        return pids if accept(pids) else None

    return wait_until(check, what, server)


@dataclass
class Outcome:
    tag: str
    status: int | None  # None: no HTTP response at all (see error)
    pid: int | None = None
    error: str = ""
    done_at: float = 0.0  # time.monotonic() when the answer was read


class Load:
    """Client threads sending GET /pid?s=...&tag=... in a loop until stopped; every outcome
    is kept. keep_alive[i] says whether client i reuses its connection."""

    def __init__(self, server: Server, keep_alive: list[bool], s: float = 0.01) -> None:
        self.server = server
        self.keep_alive = keep_alive
        self.s = s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(len(keep_alive))]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(GUARD)
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def wait_count(self, n: int) -> None:
        """Waits until n more requests were answered."""
        target = len(self.snapshot()) + n
        wait_until(lambda: len(self.snapshot()) >= target, f"{n} more load requests answered",
                   self.server)

    def client(self, i: int) -> None:
        conn: rawhttp.Connection | None = None
        n = 0
        while not self.stop.is_set():
            tag = f"c{i}-{n}"
            n += 1
            target = f"/pid?s={self.s}&tag={tag}"
            try:
                if conn is None:
                    conn = rawhttp.Connection(self.server.host, self.server.port, timeout=GUARD)
                headers = [] if self.keep_alive[i] else [("Connection", "close")]
                r = conn.request("GET", target, headers)
                out = Outcome(tag, r.status, json.loads(r.body)["pid"] if r.status == 200 else None)
                if not self.keep_alive[i] or "close" in r.connection_tokens() or r.status != 200:
                    conn.close()
                    conn = None
            except (OSError, AssertionError, ValueError) as e:
                out = Outcome(tag, None, error=repr(e))
                if conn is not None:
                    conn.close()
                conn = None
            out.done_at = time.monotonic()
            with self.lock:
                self.outcomes.append(out)
        if conn is not None:
            conn.close()


def send_hold(server: Server, release: Path, tag: str) -> rawhttp.Connection:
    c = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    c.send(rawhttp.build_request("GET", f"/hold?release={release}&tag={tag}"))
    return c


def answered(conn: rawhttp.Connection) -> bool:
    """Whether the server sent anything (or closed) on `conn` yet, without waiting."""
    ready, _, _ = select.select([conn.sock], [], [], 0)
    return bool(ready)


# ---------------------------------------------------------------------------------------
# 1. a worker killed under load


@uringapi_only
@pytest.mark.parametrize("threads", [1, 2], ids=["t1", "t2"])
def test_kill_9_fails_only_the_victims_requests(servers: ServerFactory, tmp_path: Path,
                                                threads: int) -> None:
    server, events = start(servers, tmp_path, workers=2, threads=threads)
    release = tmp_path / "release"
    # Four requests held open, one at a time: dispatch by fewest in flight alternates them
    # over the two workers, so each worker has two requests in flight.
    holds = {}
    for k in range(4):
        holds[f"h{k}"] = send_hold(server, release, f"h{k}")
        events.wait("hold-start", f"h{k}")
    hold_pid = {tag: events.of("hold-start", tag)[0][1] for tag in holds}
    assert len(set(hold_pid.values())) == 2, f"holds not spread over both workers: {hold_pid}"
    victim = hold_pid["h0"]
    survivor = next(p for p in hold_pid.values() if p != victim)
    assert worker_pids(server) == {victim, survivor}

    with Load(server, keep_alive=[True, True, False, False]) as load:
        load.wait_count(20)
        os.kill(victim, signal.SIGKILL)
        # The victim's held requests fail with 502; the survivor's are still running.
        for tag, c in holds.items():
            if hold_pid[tag] == victim:
                r = c.read_response()
                assert r.status == 502, (tag, r.status, r.body[:300])
                c.close()
        assert not any(answered(c) for t, c in holds.items() if hold_pid[t] == survivor), \
            "a request on the surviving worker was answered or cut off"
        # A new worker takes the victim's place and serves the load.
        fresh = wait_until(
            lambda: {o.pid for o in load.snapshot() if o.pid not in (None, victim, survivor)},
            "a respawned worker answering", server)
        load.wait_count(20)

    release.touch()
    for tag, c in holds.items():
        if hold_pid[tag] == survivor:
            with c:
                r = c.read_response()
            assert r.status == 200, (tag, r.status, r.body[:300])
            body = json.loads(r.body)
            assert body["pid"] == survivor and body["released"], body

    outcomes = load.snapshot()
    bad = [o for o in outcomes if o.status not in (200, 502)]
    assert bad == [], f"requests that neither succeeded nor got 502: {bad[:10]}"
    # A 502 is only right for a request the victim had: the survivor never started it.
    started_by = {tag: pid for e, pid, tag in events.read() if e == "pid-start"}
    wrongly_failed = [o for o in outcomes if o.status == 502
                      and started_by.get(o.tag, victim) != victim]
    assert wrongly_failed == [], f"502 for requests another worker ran: {wrongly_failed}"
    served = {o.pid for o in outcomes if o.status == 200}
    assert served <= {victim, survivor} | fresh, served
    assert survivor in served and fresh & served
    assert server.proc.poll() is None
    wait_log(server, rf"worker exited.* pid={victim} status=signal: 9 \(SIGKILL\)")
    assert victim not in worker_pids(server)


# ---------------------------------------------------------------------------------------
# 2. SIGHUP: rolling restart under load


@uringapi_only
def test_sighup_rolling_restart_fails_no_request(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, workers=2, threads=2)
    old = wait_workers(server, lambda p: len(p) == 2, "two workers")
    with Load(server, keep_alive=[True, True, False, False]) as load:
        load.wait_count(20)
        server.proc.send_signal(signal.SIGHUP)
        new = wait_workers(server, lambda p: len(p) == 2 and not p & old,
                           "two new workers and the old ones gone")
        load.wait_count(20)

    outcomes = load.snapshot()
    failed = [o for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {failed[:10]}"
    served = {o.pid for o in outcomes}
    assert served & old and served & new, f"load did not span the restart: {served}"
    assert served <= old | new, served

    # Every worker now is new: many concurrent requests, none answered by an old pid.
    pids = [p for _ in range(5) for p in probe_round(server, n=6, s=0.05)]
    assert all(isinstance(p, int) for p in pids), pids
    assert set(pids) == new, f"answered by {set(pids)}, new workers {new}, old {old}"

    # One at a time: each replacement was ready before the old worker was retired, and the
    # second replacement was started only after the first was ready.
    log = server.stderr().splitlines()
    starts = [i for i, line in enumerate(log) if "starting a worker (replacing worker" in line]
    retires = [i for i, line in enumerate(log) if "replacement ready; retiring worker" in line]
    readies = [i for i, line in enumerate(log) if re.search(r"worker ready worker=\d+ pid=", line)]
    assert len(starts) == 2 and len(retires) == 2, "\n".join(log[-30:])
    for s, r in zip(starts, retires, strict=True):
        assert any(s < i < r for i in readies), "\n".join(log[-30:])
    assert retires[0] < starts[1], "the second replacement started before the first was ready"
    # The old workers stopped cleanly: lifespan shutdown ran in each.
    wait_until(lambda: {pid for _, pid, _ in events.of("shutdown")} >= old,
               "lifespan shutdown in both old workers")


@uringapi_only
def test_sighup_lets_requests_in_flight_finish(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, workers=2)
    old = wait_workers(server, lambda p: len(p) == 2, "two workers")
    release = tmp_path / "release"
    hold = send_hold(server, release, "long")
    busy = events.wait("hold-start", "long")[0][1]
    idle = (old - {busy}).pop()

    server.proc.send_signal(signal.SIGHUP)
    # Both are replaced; the idle one leaves, the busy one stays until its request is done.
    pids = wait_workers(server, lambda p: busy in p and idle not in p and len(p) == 3,
                        "two replacements, the idle old worker gone, the busy one still there")
    new = pids - {busy}
    for _ in range(3):
        got = probe_round(server)
        assert set(got) <= new, f"answered by {got}: the retiring worker {busy} took new work"
    assert not answered(hold)
    release.touch()
    with hold:
        r = hold.read_response()
    assert pid_of(r) == busy
    wait_workers(server, lambda p: p == new, f"the busy old worker {busy} gone")
    order = [(e, pid) for e, pid, _ in events.read()]
    assert order.index(("hold-end", busy)) < order.index(("shutdown", busy)), order


# ---------------------------------------------------------------------------------------
# 3. SIGTERM drains


def test_sigterm_closes_idle_keep_alive_connections(servers: ServerFactory, tmp_path: Path) -> None:
    """An idle keep-alive connection (a browser's, a proxy's pool) must not hold the drain:
    --timeout-graceful-shutdown is for requests in flight. It is set far above the hang
    guard, so a drain that waits for idle connections cannot finish in time."""
    server, events = start(servers, tmp_path, "--timeout-graceful-shutdown", "60")
    idle = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    assert idle.request("GET", "/pid").status == 200  # keep-alive, now idle
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", "/sleep?s=2&tag=slow"))
        events.wait("sleep-start", "slow")
        server.proc.send_signal(signal.SIGTERM)
        # The idle connection is closed by the server, without a response ...
        with idle:
            assert idle.closed_by_peer(), "the idle keep-alive connection was left open"
        # ... while the request in flight still runs to completion.
        r = c.read_response()
    assert r.status == 200, r.body[:300]
    rc = server.wait_exit(GUARD)
    assert rc is not None, "server still running: the drain waits for the idle connection"
    if SERVER_KIND == "uringapi":
        assert rc == 0, f"exit code {rc}\n{server.stderr_tail()}"
        assert not log_lines(server, r"graceful shutdown timed out"), server.stderr_tail()
    assert events.of("shutdown")


def test_sigterm_finishes_the_request_in_flight(servers: ServerFactory, tmp_path: Path) -> None:
    # (uvicorn's multi-process supervisor keeps the listening socket open until it exits:
    # check the test itself against its single-process mode.)
    workers = 2 if SERVER_KIND == "uringapi" else 1
    server, events = start(servers, tmp_path, workers=workers)
    startup = {pid for _, pid, _ in events.wait("startup", count=workers)}
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", "/sleep?s=2&tag=slow"))
        events.wait("sleep-start", "slow")
        server.proc.send_signal(signal.SIGTERM)

        # While the request runs, the server stops accepting new connections.
        def refused() -> bool:
            try:
                socket.create_connection((server.host, server.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(refused, "new connections refused after SIGTERM")
        assert not answered(c), "the request in flight was answered or cut off early"
        r = c.read_response()
    assert r.status == 200, r.body[:300]
    assert json.loads(r.body)["pid"] in startup
    assert events.of("sleep-end", "slow") and not events.of("sleep-cancelled", "slow")

    rc = server.wait_exit(GUARD)
    assert rc is not None, "server still running after SIGTERM"
    if SERVER_KIND == "uringapi":
        assert rc == 0, f"exit code {rc}\n{server.stderr_tail()}"
    shutdown = {pid for _, pid, _ in events.of("shutdown")}
    assert shutdown == startup, f"lifespan shutdown in {shutdown}, startup in {startup}"
    assert server.wait_group_gone(5.0) == []


def sigterm_while_sleeping(server: Server, events: Events, seconds: float, tag: str) -> int | None:
    """SIGTERM while GET /sleep?s=`seconds` runs: the exit code (None: still running after
    GUARD)."""
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", f"/sleep?s={seconds}&tag={tag}"))
        events.wait("sleep-start", tag)
        server.proc.send_signal(signal.SIGTERM)
        return server.wait_exit(GUARD)


def test_sigterm_cancels_what_outlives_the_graceful_timeout(servers: ServerFactory,
                                                            tmp_path: Path) -> None:
    """A request still running when --timeout-graceful-shutdown has passed is cancelled (the
    app sees CancelledError and can clean up), and lifespan shutdown still runs after it;
    it is not left pending for the interpreter to destroy."""
    server, events = start(servers, tmp_path, "--timeout-graceful-shutdown", "1")
    rc = sigterm_while_sleeping(server, events, 60, "stuck")
    assert rc is not None, "server still running after SIGTERM"
    events.wait("sleep-cancelled", "stuck")
    assert events.of("shutdown"), "lifespan shutdown did not run after the cancellation"
    if SERVER_KIND == "uringapi":
        assert rc == 0, f"exit code {rc}\n{server.stderr_tail()}"
        assert log_lines(server, r"1 request\(s\) or WebSocket\(s\) still running when the "
                                 r"graceful timeout ended: cancelled"), server.stderr_tail()
        assert not log_lines(server, r"Task was destroyed"), server.stderr_tail()


def test_the_graceful_timeout_counts_once(servers: ServerFactory, tmp_path: Path) -> None:
    """--timeout-graceful-shutdown is the time requests in flight get, counted from the
    signal: a request that needs twice as long is cancelled, not finished. (The front end
    used to wait the timeout for its connections and then give the workers all of it again:
    the app's cancellation, and with it lifespan shutdown, came only after twice the timeout,
    past a Kubernetes terminationGracePeriodSeconds equal to it.)"""
    server, events = start(servers, tmp_path, "--timeout-graceful-shutdown", "3")
    # 6.5 s: past the timeout plus the front end's second for close frames and the worker's
    # last second, within twice the timeout plus that first second.
    rc = sigterm_while_sleeping(server, events, 6.5, "long")
    assert rc is not None, "server still running after SIGTERM"
    assert events.of("sleep-cancelled", "long"), events.read()
    assert not events.of("sleep-end", "long"), "the request ran on past the graceful timeout"
    assert events.of("shutdown"), "lifespan shutdown did not run"


def stopped_now(server: Server, events: Events, c: rawhttp.Connection, what: str,
                log: str) -> None:
    """`what` stopped the server without the drain: exit 0, the stuck request's connection
    `c` closed without a response, its task cancelled, the log saying so."""
    rc = server.wait_exit(GUARD)
    assert rc is not None, f"{what} did not stop the server"
    with pytest.raises(ConnectionError):
        c.read_response()
    assert rc == 0, f"exit code {rc}\n{server.stderr_tail()}"
    assert log_lines(server, log), server.stderr_tail()
    events.wait("sleep-cancelled", "stuck")


@uringapi_only  # uvicorn: a second SIGINT skips lifespan shutdown; a second SIGTERM waits on
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_stops_now(servers: ServerFactory, tmp_path: Path, sig: int) -> None:
    """Ctrl-C (or SIGTERM) again during the drain stops now: requests in flight are
    cancelled and their connections closed, lifespan shutdown still runs, exit 0, well
    inside a graceful timeout that would otherwise hold the server for a minute."""
    server, events = start(servers, tmp_path, "--timeout-graceful-shutdown", "60")
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", "/sleep?s=60&tag=stuck"))
        events.wait("sleep-start", "stuck")
        server.proc.send_signal(sig)
        wait_log(server, r"shutting down: draining connections")
        # A person's second Ctrl-C: later than the half second within which the front end
        # takes a signal for the first one delivered twice (process group plus forwarder).
        time.sleep(1.0)
        assert server.proc.poll() is None, "the first signal alone ended the drain"
        server.proc.send_signal(sig)
        stopped_now(server, events, c, "a second signal",
                    r"stop signal during the drain: stopping now")
    assert events.of("shutdown"), "lifespan shutdown did not run"
    assert server.wait_group_gone(5.0) == []


@uringapi_only  # uvicorn: SIGQUIT is not handled (the process dumps core, no lifespan shutdown)
def test_sigquit_is_a_quick_shutdown(servers: ServerFactory, tmp_path: Path) -> None:
    """SIGQUIT (gunicorn's quick shutdown; Ctrl-\\ sends it to the whole process group) stops
    without the drain: the request in flight is cancelled and its connection closed, the
    workers (which ignore it) run lifespan shutdown, the pid file goes, exit 0. Before, the
    front end died of it, leaving no lifespan shutdown and a stale pid file."""
    pid_file = tmp_path / "server.pid"
    server, events = start(servers, tmp_path, "--timeout-graceful-shutdown", "60",
                           "--pid-file", str(pid_file), workers=2)
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", "/sleep?s=60&tag=stuck"))
        events.wait("sleep-start", "stuck")
        os.killpg(server.pgid, signal.SIGQUIT)
        stopped_now(server, events, c, "SIGQUIT", r"SIGQUIT: stopping now")
    assert len(events.of("shutdown")) == 2, "lifespan shutdown did not run in every worker"
    assert not pid_file.exists()
    assert server.wait_group_gone(5.0) == []


# ---------------------------------------------------------------------------------------
# 4. a stalled worker gets no new requests


@uringapi_only
def test_stalled_worker_gets_no_new_requests(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, workers=2)
    results: dict[str, Outcome] = {}

    def blocked() -> None:
        try:
            r = get(server, "/block?s=2&tag=stuck")
            results["stuck"] = Outcome("stuck", r.status, pid_of(r) if r.status == 200 else None)
        except OSError as e:
            results["stuck"] = Outcome("stuck", None, error=repr(e))
        results["stuck"].done_at = time.monotonic()

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    stuck_pid = events.wait("block-start", "stuck")[0][1]
    # Once the front end has judged the worker stalled, new requests must avoid it.
    wait_log(server, rf"worker stalled: .* pid={stuck_pid}\b")

    def one(k: int) -> Outcome:
        try:
            r = get(server, f"/pid?s=0.05&tag=n{k}")
            out = Outcome(f"n{k}", r.status, pid_of(r) if r.status == 200 else None)
        except OSError as e:
            out = Outcome(f"n{k}", None, error=repr(e))
        out.done_at = time.monotonic()
        return out

    with ThreadPoolExecutor(8) as pool:
        others = list(pool.map(one, range(8)))
    t.join(GUARD)
    assert not t.is_alive(), "the blocking request never got an answer"
    stuck = results["stuck"]
    assert stuck.status == 200 and stuck.pid == stuck_pid, stuck

    assert [o.status for o in others] == [200] * 8, others
    other_pid = {o.pid for o in others}
    assert len(other_pid) == 1 and stuck_pid not in other_pid, \
        f"requests went to the stalled worker {stuck_pid}: {[o.pid for o in others]}"
    late = [o for o in others if o.done_at >= stuck.done_at]
    assert late == [], f"answered only after the blocking request: {late}"

    wait_log(server, r"in flight on it: GET /block\?s=2&tag=stuck \(running \d+ ms\)"
                     rf".* pid={stuck_pid}\b")
    wait_log(server, rf"worker moved again .* pid={stuck_pid}\b")
    # And once it moves, it serves again.
    wait_serving(server, lambda pids: stuck_pid in pids, f"worker {stuck_pid} serving again")


# ---------------------------------------------------------------------------------------
# 5. overload: the queue and its 503


@uringapi_only
def test_queue_timeout_answers_503(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, "--limit-concurrency", "1", "--queue-timeout", "0.5")
    release = tmp_path / "release"
    hold = send_hold(server, release, "first")
    events.wait("hold-start", "first")

    r = get(server, "/pid?tag=second")
    assert r.status == 503, (r.status, r.body[:300])
    assert r.header("retry-after") is not None and r.header("retry-after").isdigit(), r.headers
    assert events.of("pid-start", "second") == [], "the app ran the request that got 503"

    release.touch()
    with hold:
        assert hold.read_response().status == 200
    assert get(server, "/pid?tag=third").status == 200
    wait_log(server, r"no worker accepted the request within --queue-timeout; answering 503")


@uringapi_only
def test_queued_request_is_served_when_the_worker_frees(servers: ServerFactory,
                                                        tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, "--limit-concurrency", "1", "--queue-timeout", "30")
    release = tmp_path / "release"
    hold = send_hold(server, release, "first")
    events.wait("hold-start", "first")

    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as queued:
        queued.send(rawhttp.build_request("GET", "/pid?tag=queued", [("Connection", "close")]))
        # It waits: longer than the 0.5 s queue timeout above, it is neither answered nor
        # started by the app while the first request holds the only place.
        time.sleep(1.0)
        assert not answered(queued), "the queued request was answered while the worker was full"
        assert events.of("pid-start", "queued") == []
        release.touch()
        r = queued.read_response()
    assert r.status == 200, (r.status, r.body[:300])
    with hold:
        assert hold.read_response().status == 200
    order = [(e, tag) for e, _, tag in events.read()]
    assert order.index(("hold-end", "first")) < order.index(("pid-start", "queued")), order


@uringapi_only
def test_queued_request_of_a_client_that_left_never_reaches_the_app(servers: ServerFactory,
                                                                    tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, "--limit-concurrency", "1", "--queue-timeout", "30")
    release = tmp_path / "release"
    hold = send_hold(server, release, "first")
    events.wait("hold-start", "first")
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as queued:
        queued.send(rawhttp.build_request("GET", "/pid?tag=abandoned"))
        time.sleep(0.5)  # it is in the queue now (the worker is full)
    # The client closed its connection; now the worker frees.
    release.touch()
    with hold:
        assert hold.read_response().status == 200
    assert get(server, "/pid?tag=after").status == 200
    assert events.of("pid-start", "abandoned") == [], "the app ran a request whose client had left"


@uringapi_only
def test_full_queue_answers_503_at_once(servers: ServerFactory, tmp_path: Path) -> None:
    """--limit-queue 1: with the only place taken, of two more requests one waits in the
    queue and the other is refused at once (long before the 30 s queue timeout); the
    waiting one is served when the place frees. The refusals are logged once per 10 s."""
    server, events = start(servers, tmp_path, "--limit-concurrency", "1", "--limit-queue", "1",
                           "--queue-timeout", "30")
    release = tmp_path / "release"
    hold = send_hold(server, release, "first")
    events.wait("hold-start", "first")
    conns = {}
    for tag in ("a", "b"):
        conns[tag] = rawhttp.Connection(server.host, server.port, timeout=GUARD)
        conns[tag].send(rawhttp.build_request("GET", f"/pid?tag={tag}", [("Connection", "close")]))
    ready, _, _ = select.select([c.sock for c in conns.values()], [], [], GUARD)
    assert len(ready) == 1, f"{len(ready)} of the 2 requests answered while the worker was full"
    refused = next(t for t, c in conns.items() if c.sock in ready)
    waiting = "b" if refused == "a" else "a"
    r = conns[refused].read_response()
    assert r.status == 503, (r.status, r.body[:300])
    assert r.header("retry-after") is not None, r.headers
    assert not answered(conns[waiting]) and not answered(hold)
    # Overload makes such refusals by the thousand: the log says so once per 10 s.
    assert [get(server, "/pid?tag=more").status for _ in range(50)] == [503] * 50
    assert server.stderr().count("request queue full") == 1, server.stderr_tail()

    release.touch()
    assert conns[waiting].read_response().status == 200
    with hold:
        assert hold.read_response().status == 200
    for c in conns.values():
        c.close()
    assert events.of("pid-start", refused) == [] and events.of("pid-start", waiting)
    wait_log(server, r"request queue full; answering 503")


# ---------------------------------------------------------------------------------------
# 6. --timeout-request


@uringapi_only
def test_request_timeout_504_and_cancel(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, "--timeout-request", "1")
    # Before the response started: 504, and the app's task is cancelled.
    r = get(server, "/sleep?s=10&tag=slow")
    assert r.status == 504, (r.status, r.body[:300])
    events.wait("sleep-cancelled", "slow")
    assert events.of("sleep-end", "slow") == []

    # After it started: the connection is closed mid-body, and the task is cancelled.
    with rawhttp.Connection(server.host, server.port, timeout=GUARD) as c:
        c.send(rawhttp.build_request("GET", "/stream?s=10&tag=streaming",
                                     [("Connection", "close")]))
        head = c.read_head()
        assert head.status == 200
        assert head.header("transfer-encoding") == "chunked", head.headers
        rest = c.read_until_closed()
    assert b"first chunk" in rest, rest
    assert b"last chunk" not in rest and not rest.endswith(b"0\r\n\r\n"), \
        f"the response completed despite --timeout-request: {rest!r}"
    events.wait("stream-cancelled", "streaming")
    assert events.of("stream-end", "streaming") == []

    # Requests within the limit are untouched, on the same worker.
    first = events.of("sleep-start", "slow")[0][1]
    r = get(server, "/sleep?s=0.1&tag=quick")
    assert pid_of(r) == first
    assert events.of("sleep-end", "quick")


# ---------------------------------------------------------------------------------------
# 7. recycling: --limit-max-requests, --workers-lifetime, --workers-max-rss


@uringapi_only
def test_limit_max_requests_recycles_without_failures(servers: ServerFactory,
                                                      tmp_path: Path) -> None:
    limit = 20
    server, _ = start(servers, tmp_path, "--limit-max-requests", str(limit),
                      "--recycle-jitter", "0")
    # Sequential, on one keep-alive connection, until two swaps were seen.
    order: list[int] = []
    deadline = time.monotonic() + 3 * GUARD
    conn = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    with conn:
        while len(set(order)) < 3:
            assert time.monotonic() < deadline, f"pids seen: {sorted(set(order))}"
            r = conn.request("GET", "/pid")
            order.append(pid_of(r))  # fails on any non-200
            assert "close" not in r.connection_tokens()
            time.sleep(0.005)
    firsts = list(dict.fromkeys(order))
    counts = {p: order.count(p) for p in firsts}
    # Each replaced worker served at least `limit` requests first (the first one also
    # answered the harness's readiness probe, not counted here).
    assert counts[firsts[1]] >= limit, counts
    assert counts[firsts[0]] + 1 >= limit, counts
    # A worker's answers come in one run: once replaced, it never answers again.
    runs = [p for i, p in enumerate(order) if i == 0 or order[i - 1] != p]
    assert runs == firsts, f"pids alternate: {runs}"

    # Concurrent clients, until two more swaps.
    seen = set(order)
    with Load(server, keep_alive=[True, False, True, False], s=0) as load:
        wait_until(lambda: len({o.pid for o in load.snapshot()} - seen) >= 2,
                   "two more recycled workers answering", server)
    outcomes = load.snapshot()
    failed = [o for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:10]}"
    assert_recycled_once(server, "--limit-max-requests")
    # Replaced workers are gone, not lingering: only the current one is left.
    wait_workers(server, lambda p: len(p) == 1, "one worker left")


@uringapi_only
@pytest.mark.parametrize("flag", ["--workers-lifetime", "--workers-max-rss"],
                         ids=["lifetime", "max-rss"])
def test_recycling_by_lifetime_and_rss(servers: ServerFactory, tmp_path: Path,
                                       flag: str) -> None:
    """1 s of life, or 1 MiB of RSS (every Python process is past it at once): workers are
    replaced again and again while clients keep sending; none of their requests fails."""
    server, _ = start(servers, tmp_path, flag, "1", "--recycle-jitter", "0")
    first = pid_of(get(server, "/pid"))
    with Load(server, keep_alive=[True, False], s=0.01) as load:
        wait_until(lambda: len({o.pid for o in load.snapshot()} - {first, None}) >= 2,
                   "two recycled workers answering", server)
    outcomes = load.snapshot()
    failed = [o for o in outcomes if o.status != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:10]}"
    assert_recycled_once(server, flag)
    wait_workers(server, lambda p: first not in p, f"the first worker {first} gone")


# ---------------------------------------------------------------------------------------
# 8. SIGTTIN / SIGTTOU


@uringapi_only
def test_sigttin_adds_and_sigttou_removes_a_worker(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, workers=1)
    (first,) = wait_workers(server, lambda p: len(p) == 1, "one worker")

    server.proc.send_signal(signal.SIGTTIN)
    both = wait_serving(server, lambda p: len(p) == 2, "a second worker serving")
    assert first in both
    added = (both - {first}).pop()
    assert worker_pids(server) == {first, added}

    # One request held open on each worker (fewest in flight: the second goes to the other).
    release = tmp_path / "release"
    holds = [send_hold(server, release, "hold-a"), send_hold(server, release, "hold-b")]
    events.wait("hold-start", "hold-a")
    events.wait("hold-start", "hold-b")
    held = {tag: pid for e, pid, tag in events.read() if e == "hold-start"}
    assert set(held.values()) == {first, added}, held

    # SIGTTOU retires the newest worker: no new requests, but it finishes the one it has.
    server.proc.send_signal(signal.SIGTTOU)
    wait_log(server, rf"SIGTTOU: retiring a worker .*pid={added}\b")
    for _ in range(3):
        assert set(probe_round(server)) == {first}
    assert added in worker_pids(server), "the retired worker left before its request finished"
    assert not any(answered(c) for c in holds)
    release.touch()
    for c, tag in zip(holds, ("hold-a", "hold-b"), strict=True):
        with c:
            r = c.read_response()
        assert pid_of(r) == held[tag]
    wait_workers(server, lambda p: p == {first}, f"the retired worker {added} gone")
    assert [pid for _, pid, _ in events.of("shutdown")] == [added]

    # Never below one.
    server.proc.send_signal(signal.SIGTTOU)
    wait_log(server, r"SIGTTOU ignored")
    assert worker_pids(server) == {first}
    assert set(probe_round(server)) == {first}
    assert server.proc.poll() is None


@uringapi_only
def test_sigterm_while_a_worker_still_imports_is_a_clean_stop(servers: ServerFactory,
                                                              tmp_path: Path) -> None:
    """A worker added just before shutdown has no SIGTERM handler yet: it dies of the signal.
    That is the stop asked for, not a worker gone wrong: no warning, exit 0."""
    hold = tmp_path / "import-hold"
    log = tmp_path / "events.log"
    server = servers.start(APP, workers=1, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log),
                                "URINGAPI_TEST_IMPORT_HOLD": str(hold)})
    events = Events(log)
    (first,) = wait_workers(server, lambda p: len(p) == 1, "one worker")
    hold.touch()
    server.proc.send_signal(signal.SIGTTIN)
    ((_, starting, _),) = events.wait("import-held")
    assert starting != first
    assert server.stop(signal.SIGTERM) == 0, server.stderr_tail()
    assert not log_lines(server, r"WARN|ERROR"), server.stderr_tail()
    assert log_lines(server, rf"worker stopped while still starting .*pid={starting}\b")
    assert [pid for _, pid, _ in events.of("shutdown")] == [first]


# ---------------------------------------------------------------------------------------
# 8b. --sched: the scheduling policy of front-end threads and workers


def _policies(server: Server) -> dict[str, int]:
    """Scheduling policy per front-end thread ("io-N") and per worker process ("worker")."""
    got: dict[str, int] = {}
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("uringapi-io-"):
            got[name] = os.sched_getscheduler(int(task.name))
    for pid in worker_pids(server):
        got[f"worker {pid}"] = os.sched_getscheduler(pid)
    return got


@uringapi_only
@pytest.mark.parametrize(("flag", "policy"), [((), os.SCHED_BATCH), (("--sched", "normal"), os.SCHED_OTHER)])
def test_sched_policy_of_threads_and_workers(servers: ServerFactory, tmp_path: Path,
                                             flag: tuple[str, ...], policy: int) -> None:
    server, _ = start(servers, tmp_path, *flag, workers=2, threads=2)
    wait_workers(server, lambda p: len(p) == 2, "two workers")
    got = _policies(server)
    assert len([k for k in got if k.startswith("uringapi-io-")]) == 2, got
    assert len([k for k in got if k.startswith("worker")]) == 2, got
    assert set(got.values()) == {policy}, got
    # The supervisor's own thread keeps the default policy either way.
    assert os.sched_getscheduler(server.proc.pid) == os.SCHED_OTHER
    assert pid_of(get(server, "/pid")) in worker_pids(server)


@uringapi_only
def test_sched_keeps_a_policy_set_with_chrt(servers: ServerFactory, tmp_path: Path) -> None:
    """Started under SCHED_IDLE (as `chrt --idle 0` would), the server does not switch its
    threads and workers to SCHED_BATCH."""
    started: list[tuple[Server, Events]] = []

    def start_idle() -> None:
        # The policy is per thread and inherited across fork: only this thread's child
        # starts under SCHED_IDLE.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        started.append(start(servers, tmp_path, workers=2))

    t = threading.Thread(target=start_idle)
    t.start()
    t.join(GUARD * 3)
    assert started, "the server did not start"
    server, _ = started[0]
    wait_workers(server, lambda p: len(p) == 2, "two workers")
    got = _policies(server)
    assert len(got) == 3, got
    assert set(got.values()) == {os.SCHED_IDLE}, got


# ---------------------------------------------------------------------------------------
# 9. --timeout: a silent worker is killed and replaced


@uringapi_only
def test_timeout_kills_a_blocked_worker(servers: ServerFactory, tmp_path: Path) -> None:
    server, events = start(servers, tmp_path, "--timeout", "1", "--stall-timeout", "0.1")
    r = get(server, "/block?s=30&tag=forever")  # GUARD < 30 s: only a kill answers in time
    assert r.status == 502, (r.status, r.body[:300])
    victim = events.of("block-start", "forever")[0][1]
    assert events.of("block-end", "forever") == []

    wait_log(server, rf"worker silent for [\d.]+ s \(--timeout\); killing it .* pid={victim}\b")
    wait_log(server, rf"worker exited.* pid={victim} status=signal: 6 \(SIGABRT\)")
    # faulthandler's dump: the line of the app that blocked.
    log = server.stderr()
    assert "Fatal Python error: Aborted" in log, server.stderr_tail()
    assert re.search(r'File ".*ops_app\.py", line \d+ in app', log), server.stderr_tail()

    fresh = pid_of(get(server, "/pid"))
    assert fresh != victim
    assert victim not in worker_pids(server)


# ---------------------------------------------------------------------------------------
# 10. --request-id


def headers_seen(server: Server, headers: list[tuple[str, str]] | None = None) -> list[str]:
    r = get(server, "/headers", headers)
    assert r.status == 200, r.body[:300]
    return [v for k, v in json.loads(r.body)["headers"] if k.lower() == "x-request-id"]


@uringapi_only
def test_request_id(servers: ServerFactory, tmp_path: Path) -> None:
    server, _ = start(servers, tmp_path, "--request-id")
    assert headers_seen(server, [("X-Request-ID", "client-id-42")]) == ["client-id-42"]
    generated = [headers_seen(server) for _ in range(3)]
    for ids in generated:
        assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids[0]), generated
    assert len({ids[0] for ids in generated}) == 3, f"ids repeat: {generated}"

    (tmp_path / "plain").mkdir()
    plain, _ = start(servers, tmp_path / "plain")
    assert headers_seen(plain) == []
    assert headers_seen(plain, [("X-Request-ID", "client-id-42")]) == ["client-id-42"]


# ---------------------------------------------------------------------------------------
# 11. the client leaves mid-request


@uringapi_only
def test_client_disconnect_reaches_the_app(servers: ServerFactory, tmp_path: Path) -> None:
    # One place per worker: the next request is served only once the front end counts
    # the abandoned one as finished.
    server, events = start(servers, tmp_path, "--limit-concurrency", "1", "--queue-timeout", "5")
    c = rawhttp.Connection(server.host, server.port, timeout=GUARD)
    c.send(rawhttp.build_request("POST", "/wait-disconnect?tag=gone", body=b"payload"))
    (_, waiting_pid, _), = events.wait("wait-start", "gone")
    assert not answered(c)
    c.close()
    seen = events.wait("disconnect-seen", "gone")
    assert seen[0][1] == waiting_pid

    r = get(server, "/pid?tag=next")
    assert pid_of(r) == waiting_pid, "the following request was not served by the same worker"
    assert server.proc.poll() is None
