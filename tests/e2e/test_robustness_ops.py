"""Operational robustness (issue 15, robust-a): the ring-occupancy gauge under a queued
load, where --metrics-port binds, the page size behind the RSS figures, a quiet shutdown on
a group signal, FIFO order of the wait queue, a non-blocking access log and front-end log, and
a front-end thread that dies. The app is tests/apps/ops_app.py."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import httpx
import pytest

import rawhttp
from harness import APPS_DIR, Server, ServerFactory, free_port, server_command, server_env

pytestmark = pytest.mark.uringapi_only

APP = "ops_app:app"


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text: str, name: str) -> list[float]:
    """Every value of the metric `name` (any labels)."""
    out = []
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            if key == name or key.startswith(name + "{"):
                out.append(float(value))
    return out


def get(server: Server, path: str, timeout: float = 60) -> rawhttp.Response:
    with rawhttp.Connection(server.host, server.port, timeout=timeout) as c:
        return c.request("GET", path)


def listening_addresses(port: int) -> list[str]:
    """Local IPv4 addresses of the listening TCP sockets on `port` (from /proc/net/tcp)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        addr, _, p = local.partition(":")
        if state == "0A" and int(p, 16) == port:
            octets = [str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)]
            out.append(".".join(octets))
    return out


def start_on_host(servers: ServerFactory, host: str, extra: tuple[str, ...]) -> Server:
    """A server whose app port listens on `host` (the harness always passes 127.0.0.1)."""
    port = free_port()
    cmd = server_command(APP, port, 1, 1, APPS_DIR, "info", extra)
    cmd[cmd.index("--host") + 1] = host
    server = Server(cmd, port, 1, 1, servers.log_root / f"host-{host}-{port}", server_env())
    servers.servers.append(server)
    server.wait_ready("/pid")
    return server


@pytest.mark.parametrize(
    ("extra", "bound"),
    [
        pytest.param((), "127.0.0.1", id="default-loopback"),
        pytest.param(("--metrics-host", "0.0.0.0"), "0.0.0.0", id="metrics-host-says-otherwise"),
    ],
)
def test_metrics_bind_loopback_unless_told(servers: ServerFactory, extra, bound) -> None:
    metrics_port = free_port()
    server = start_on_host(servers, "0.0.0.0", ("--metrics-port", str(metrics_port), *extra))
    assert listening_addresses(server.port) == ["0.0.0.0"], "the app follows --host"
    assert listening_addresses(metrics_port) == [bound]
    assert scrape(metrics_port, "/healthz")[0] == 200
    server.stop()


def test_ring_occupancy_between_empty_and_full(servers: ServerFactory) -> None:
    # One worker blocks its event loop; requests sent meanwhile wait in its request ring
    # (a long stall timeout keeps them from being routed around it). The gauge must then
    # read a fraction: more than 0, less than the whole ring.
    metrics_port = free_port()
    server = servers.start(
        APP, workers=1, threads=1, probe_path="/pid",
        extra_args=("--metrics-port", str(metrics_port), "--ring-capacity", "16",
                    "--stall-timeout", "60"),
    )
    blocker = threading.Thread(target=get, args=(server, "/block?s=4"))
    blocker.start()
    time.sleep(0.5)
    queued = [threading.Thread(target=get, args=(server, f"/pid?tag={i}")) for i in range(4)]
    for t in queued:
        t.start()
    seen: list[float] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(0 < v < 1 for v in seen):
        seen += sample(scrape(metrics_port)[1], "uringapi_worker_ring_occupancy_ratio")
        time.sleep(0.05)
    for t in [blocker, *queued]:
        t.join(60)
    assert any(0 < v < 1 for v in seen), f"occupancy samples: {sorted(set(seen))}"
    server.stop()


def test_group_sigterm_shuts_down_quietly(servers: ServerFactory) -> None:
    # Ctrl-C in a terminal (or `kill -TERM -PGID`) signals the front end and every worker
    # at once. The workers' exits are the shutdown, not crashes: nothing is respawned and
    # the process exits 0. Several rounds, since the race is one of timing.
    for _ in range(3):
        server = servers.start(APP, workers=3, threads=1, probe_path="/pid")
        assert get(server, "/pid").status == 200
        os.killpg(server.pgid, signal.SIGTERM)
        assert server.wait_exit(60) == 0, server.diagnostics()
        assert not server.wait_group_gone(30), server.diagnostics()
        log = server.stderr()
        assert "respawning" not in log, log
        assert "exited uncleanly" not in log, log
        # Nothing to report at info either: the workers' SIGTERM came with the front end's.
        assert "SIGTERM not sent by the uringapi front end" not in log, log


def test_a_thread_the_app_left_running_holds_the_exit_only_for_the_graceful_timeout(
        servers: ServerFactory) -> None:
    """A non-daemon thread that never ends would hold the worker's exit (Python joins such
    threads) until the front end killed it, grace + 5 s later, with a warning that said
    nothing of why. It gets the graceful timeout, then the worker names it and exits 0."""
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid",
                           extra_args=("--timeout-graceful-shutdown", "2"))
    assert get(server, "/thread?tag=forever").status == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.diagnostics()
    log = server.stderr()
    assert re.search(r"WARNING .*1 non-daemon thread\(s\) the app started \(poller-forever\) "
                     r"still running after lifespan shutdown and the graceful timeout: "
                     r"exiting without them", log), log
    assert "killing them" not in log, log


def test_a_lifespan_shutdown_that_never_ends_is_cancelled_and_named_in_the_log(
        servers: ServerFactory, tmp_path: Path) -> None:
    """A FastAPI app whose shutdown waits for ever (a pool's close on a peer that went away)
    held each worker until the front end SIGKILLed it, 5 s past the graceful timeout, with
    a warning that said only "workers still running". Now each worker cancels it after the
    graceful timeout plus 3 s, logs where it was waiting, and exits by itself: exit 0, no
    kill. (uvicorn waits for ever here.)"""
    log = tmp_path / "events.log"
    server = servers.start("hung_shutdown_app:app", workers=2, threads=1, probe_path="/",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)},
                           extra_args=("--timeout-graceful-shutdown", "1"))
    assert get(server, "/").status == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.diagnostics()
    events = log.read_text().split()
    assert events.count("shutdown-start") == 2, events
    assert events.count("shutdown-cancelled") == 2, events
    text = server.stderr()
    told = re.findall(r"ERROR worker\[\d:\d+\] uringapi.error: lifespan shutdown still "
                      r"running after \d\.\d s \(the rest of the graceful timeout plus 3 s\): "
                      r"cancelled; it was here:\nTraceback[^\n]*\n(?:  .*\n)*?  File \"[^\"]*hung_shutdown_app.py\", "
                      r"line \d+, in close_pool", text)
    assert len(told) == 2, text
    assert "killing them" not in text, text


def test_worker_log_lines_are_timed_as_the_front_ends(servers: ServerFactory) -> None:
    """The workers' lines carried local time in Python's default form ("2026-12-07
    09:51:20,914"), the front end's UTC in RFC 3339: in one log, five hours apart under
    TZ=ABC-5. Both are UTC with microseconds now."""
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid", env={"TZ": "ABC-5"},
                           log_level="debug")
    # A SIGTERM to the worker itself: it logs (at debug) that it asks for a replacement.
    (worker_pid,) = set(server.group_members()) - {server.proc.pid}
    os.kill(worker_pid, signal.SIGTERM)
    server.wait_log(r"SIGTERM not sent by the uringapi front end", 30)
    server.stop(signal.SIGTERM)
    stamp = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z"
    front = re.search(stamp + r" +INFO shutting down", server.stderr())
    worker = re.findall(stamp + r" \w+ worker\[0:\d+\] ", server.stderr())
    assert front and worker, server.stderr()
    apart = datetime.fromisoformat(worker[-1]) - datetime.fromisoformat(front.group(1))
    assert abs(apart.total_seconds()) < 30, (front.group(0), worker[-1])


def test_tasks_the_app_left_running_are_cancelled_at_shutdown(servers: ServerFactory,
                                                              tmp_path: Path) -> None:
    """Work the app started and left running (a poller made with create_task) was dropped
    with the loop at exit: its finally blocks never ran, without a word. As at the end of
    asyncio.run, such tasks are now cancelled after lifespan shutdown, and their clean-up
    runs."""
    log = tmp_path / "events.log"
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid",
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)})
    for tag in ("a", "b"):
        assert get(server, f"/leave?tag={tag}").status == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.diagnostics()
    cleaned = sorted(line.split()[2] for line in log.read_text().splitlines()
                     if line.startswith("left-cleanup "))
    assert cleaned == ["a", "b"], log.read_text()


def wait_refused(server: Server) -> None:
    """Until a new connection is refused (a bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((server.host, server.port), timeout=5).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "the listener stayed open"
        time.sleep(0.005)


def test_a_drain_tells_keep_alive_clients_to_close_and_answers_their_late_requests(
        servers: ServerFactory) -> None:
    """During a drain each keep-alive connection closes after its response, and the response
    says so (`Connection: close`), so the client sends its next request on a new connection
    (to another server). A request sent on an idle one just after the signal is answered the
    same way: closing idle connections at once lost every such request to the race (each of
    48 busy keep-alive connections lost one at SIGTERM; uvicorn loses them too). A WebSocket
    upgrade then is refused (503): it would only be closed at the graceful timeout."""
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid")
    busy = rawhttp.Connection(server.host, server.port, timeout=30)
    idle = rawhttp.Connection(server.host, server.port, timeout=30)
    fresh = rawhttp.Connection(server.host, server.port, timeout=30)
    with busy, idle, fresh:
        assert idle.request("GET", "/pid").status == 200  # keep-alive, now idle
        busy.send(rawhttp.build_request("GET", "/sleep?s=2"))
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        wait_refused(server)  # the front-end thread drains: it closed its listener
        late = idle.request("GET", "/pid")
        assert (late.status, late.header("connection")) == (200, "close"), late
        upgrade = fresh.request("GET", "/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                               ("Sec-WebSocket-Version", "13")])
        assert (upgrade.status, upgrade.header("connection")) == (503, "close"), upgrade
        first = busy.read_response()
        assert (first.status, first.header("connection")) == (200, "close"), first
        assert idle.closed_by_peer() and busy.closed_by_peer() and fresh.closed_by_peer()
    assert server.wait_exit(30) == 0, server.diagnostics()


@pytest.mark.parametrize("driver", ["uring", "epoll"])
def test_connections_waiting_to_be_accepted_at_a_drain_are_answered(
        servers: ServerFactory, driver: str) -> None:
    """Clients that open a connection per request (a load balancer's health checks, scripts)
    keep connecting while the server drains. A connection the kernel had completed but the
    thread had not accepted yet was reset when the listener closed, after its client had
    sent the request: 10 to 110 such requests lost at SIGTERM with 100 clients (uvicorn: 35
    to 50). The thread now takes the accept in flight and its accept queue before closing,
    and answers them with `Connection: close`."""
    import asyncio

    server = servers.start(APP, workers=1, threads=2, probe_path="/pid",
                           extra_args=("--io-driver", driver))
    counts = {"answered": 0, "refused": 0, "lost": 0}
    stop = False

    async def client() -> None:
        while not stop:
            try:
                reader, writer = await asyncio.open_connection(server.host, server.port)
            except OSError:
                counts["refused"] += 1
                await asyncio.sleep(0.01)
                continue
            try:
                writer.write(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.read(65536), 30)
                answered = head.startswith(b"HTTP/1.1 200 ")
            except (ConnectionResetError, BrokenPipeError):
                answered = False
            finally:
                writer.close()
            counts["answered" if answered else "lost"] += 1

    async def run() -> None:
        nonlocal stop
        clients = [asyncio.create_task(client()) for _ in range(100)]
        await asyncio.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)
        stop = True
        await asyncio.gather(*clients)

    asyncio.run(run())
    assert server.wait_exit(30) == 0, server.diagnostics()
    assert counts["answered"] > 100 and counts["refused"] > 0, counts
    assert counts["lost"] == 0, counts


@pytest.mark.parametrize("to", ["ign", "dfl", "own"])
def test_a_worker_whose_app_resets_sigterm_still_stops_gracefully(servers: ServerFactory,
                                                                   to: str) -> None:
    """The front end stops a ready worker through shared memory alone. When it also sent
    SIGTERM (once the connections had drained), an app that had set SIGTERM to SIG_IGN held
    its worker until the kill, graceful + 5 s later, and one that had set SIG_DFL died of
    it; neither ran its lifespan shutdown, and the log said the worker exited uncleanly."""
    server = servers.start(APP, workers=1, threads=1, probe_path="/pid",
                           extra_args=("--timeout-graceful-shutdown", "60"))
    assert get(server, f"/set-sigterm?to={to}").status == 200
    with rawhttp.Connection(server.host, server.port, timeout=30) as busy:
        busy.send(b"GET /pid?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # it is in the app, asleep
        server.proc.send_signal(signal.SIGTERM)
        assert busy.read_response().status == 200, server.stderr_tail()
    assert server.wait_exit(30) == 0, server.diagnostics()
    log = server.stderr()
    assert "killing them" not in log and "uncleanly" not in log, log


def test_wait_queue_is_fifo(servers: ServerFactory, tmp_path: Path) -> None:
    # One worker taking two requests at a time; 30 requests arrive 5 ms apart and hold
    # until a file appears. Each is sent once the one before it is known to be in (started
    # in the app, or counted in the queue), so the arrival order is certain. Once released,
    # the worker must start them in exactly that order.
    events, release = tmp_path / "events.log", tmp_path / "release"
    metrics_port = free_port()
    server = servers.start(
        APP, workers=1, threads=1, probe_path="/pid", env={"URINGAPI_TEST_EVENT_LOG": str(events)},
        extra_args=("--metrics-port", str(metrics_port), "--limit-concurrency", "2",
                    "--stall-timeout", "60", "--queue-timeout", "120"),
    )

    def started() -> list[str]:
        if not events.exists():
            return []
        return [line.split()[2] for line in events.read_text().splitlines()
                if line.startswith("hold-start") and len(line.split()) > 2]

    def queue_depth() -> float:
        return sum(sample(scrape(metrics_port)[1], "uringapi_queue_depth"))

    def until(pred, what: str) -> None:
        deadline = time.monotonic() + 60
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)

    conns = []
    try:
        for i in range(30):
            c = rawhttp.Connection(server.host, server.port, timeout=120)
            conns.append(c)
            c.send(f"GET /hold?release={release}&tag=r{i:02d} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if i < 2:
                until(lambda i=i: len(started()) == i + 1, f"request {i} to start")
            else:
                until(lambda i=i: queue_depth() == i - 1, f"request {i} to queue")
            time.sleep(0.005)
        release.touch()
        for c in conns:
            assert c.read_response("GET").status == 200
    finally:
        for c in conns:
            c.close()
    assert started() == [f"r{i:02d}" for i in range(30)]
    server.stop()


def test_access_log_into_a_pipe_nobody_reads(servers: ServerFactory, tmp_path: Path) -> None:
    # The log's destination stops draining (a FIFO whose reader never reads: the pipe fills
    # after 64 KiB). Requests must keep being answered; the lines that do not fit the
    # writer's bounded queue are dropped and counted.
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, never read
    try:
        metrics_port = free_port()
        server = servers.start(
            APP, workers=1, threads=1, probe_path="/pid",
            extra_args=("--metrics-port", str(metrics_port), "--access-log-file", str(fifo)),
        )
        tag = "x" * 2000  # ~2 KiB per line: the pipe and the 1 MiB queue fill in ~600 lines

        def dropped() -> float:
            return sum(sample(scrape(metrics_port)[1], "uringapi_access_log_dropped_lines_total"))

        def burst(n: int) -> None:
            with rawhttp.Connection(server.host, server.port, timeout=60) as c:
                for i in range(n):
                    assert c.request("GET", f"/pid?tag={tag}{i}").status == 200

        marks = []
        for _ in range(2):
            burst(800)
            deadline = time.monotonic() + 30
            while dropped() <= (marks[-1] if marks else 0) and time.monotonic() < deadline:
                time.sleep(0.1)
            marks.append(dropped())
        assert 0 < marks[0] < marks[1], f"dropped lines after each burst: {marks}"
        assert server.stop() == 0, server.diagnostics()
    finally:
        os.close(reader)


def h2_pings(port: int, count: int) -> None:
    """One HTTP/2 connection that sends `count` PINGs at once (under a `trace` filter the
    h2 crate writes several log lines for each; past its bound the connection is closed)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"8 bytes!"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(preface + ping * count)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass  # closed with our PINGs' acks unread


def test_the_front_ends_own_log_into_a_pipe_nobody_reads(servers: ServerFactory) -> None:
    # stderr is a pipe its reader stopped reading (a stalled log shipper, a parent that
    # never reads): 64 KiB of log lines fill it. The front end's own lines (a `trace` filter
    # on the h2 crate: ~700 bytes per PING) must not stop it: requests keep being answered,
    # the lines past its queue are dropped, and once the pipe drains a line says how many.
    # Before, the io_uring thread blocked in write(2) on its next log line and every client
    # waited. The workers write nothing per request here, so only the front end is tested.
    port = free_port()
    cmd = server_command(APP, port, 1, 1, APPS_DIR, "info", ())
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=write_end, env=server_env({"URINGAPI_LOG": "trace"}))
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert get_port(port, "/pid", 5).status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        for _ in range(4):  # ~2.5 MiB of lines: the pipe and the 1 MiB queue overflow
            h2_pings(port, 900)
        for _ in range(20):
            assert get_port(port, "/pid", 10).status == 200
        # The reader comes back: what was queued arrives, then the count of what was not.
        seen = bytearray()
        os.set_blocking(read_end, False)
        deadline = time.monotonic() + 30
        while b"lines were dropped" not in seen:
            assert time.monotonic() < deadline, seen[-2000:].decode(errors="replace")
            try:
                chunk = os.read(read_end, 1 << 20)
            except BlockingIOError:
                get_port(port, "/pid", 10)  # a line to queue once there is room
                time.sleep(0.05)
                continue
            seen += chunk
        notice = re.search(rb"WARN the log did not keep up; (\d+) lines were dropped", seen)
        assert notice and int(notice[1]) > 0, seen[-2000:].decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)


def get_port(port: int, path: str, timeout: float) -> rawhttp.Response:
    with rawhttp.Connection("127.0.0.1", port, timeout=timeout) as c:
        return c.request("GET", path)


def test_a_dead_frontend_thread_turns_readyz_503_and_exits_non_zero(
        servers: ServerFactory, tmp_path: Path) -> None:
    # Test-only hook (URINGAPI_TEST_PANIC_FILE): front-end thread 0 panics once the file
    # exists. A worker kept busy in a blocking call holds the shutdown open for a while, so
    # /readyz can be seen saying 503 before the process exits.
    trigger = tmp_path / "panic-now"
    metrics_port = free_port()
    server = servers.start(
        APP, workers=1, threads=1, probe_path="/pid",
        env={"URINGAPI_TEST_PANIC_FILE": str(trigger)},
        extra_args=("--metrics-port", str(metrics_port)),
    )
    deadline = time.monotonic() + 30
    while scrape(metrics_port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, server.diagnostics()
        time.sleep(0.05)
    busy = rawhttp.Connection(server.host, server.port, timeout=60)
    busy.send(b"GET /block?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    trigger.touch()
    statuses = set()
    deadline = time.monotonic() + 60
    while server.proc.poll() is None and time.monotonic() < deadline:
        try:
            statuses.add(scrape(metrics_port, "/readyz")[0])
        except OSError:
            pass  # the endpoint goes with the process
        time.sleep(0.02)
    busy.close()
    code = server.wait_exit(60)
    assert 503 in statuses, (statuses, server.stderr_tail())
    assert code not in (None, 0), server.diagnostics()
    log = server.stderr()
    assert "front-end thread panicked" in log, log
    assert "a front-end thread died" in log, log


def spawn_with_limit(servers: ServerFactory, limit: str, value: int, *extra: str) -> Server:
    """One worker and one thread under a soft and hard `resource.RLIMIT_<limit>` of
    `value`, not yet ready."""
    port = free_port()
    cmd = server_command(APP, port, 1, 1, APPS_DIR, "info", extra)
    wrapper = ("import os, resource, sys; "
               f"resource.setrlimit(resource.RLIMIT_{limit}, ({value}, {value})); "
               "os.execv(sys.argv[1], sys.argv[1:])")
    server = Server([sys.executable, "-c", wrapper, *cmd], port, 1, 1,
                    servers.log_root / f"{limit.lower()}-{port}", server_env())
    servers.servers.append(server)
    return server


def start_with_fd_limit(servers: ServerFactory, nofile: int, *extra: str) -> Server:
    """One worker and one thread under a soft and hard fd limit of `nofile`."""
    server = spawn_with_limit(servers, "NOFILE", nofile, *extra)
    server.wait_ready("/pid")
    return server


def test_requests_past_the_request_timeout_are_logged_once_per_10_s(servers: ServerFactory) -> None:
    """A backend that hangs times out every request: each 504 (or response cut off once
    started) wrote a warning, thousands a second under load. Now one line per 10 s and
    thread, counting them; each request is still answered 504, over HTTP/1.1 and HTTP/2."""
    server = servers.start(APP, workers=1, threads=1, extra_args=("--timeout-request", "0.2"))
    with httpx.Client(http1=False, http2=True, timeout=30) as h2:
        for i in range(6):
            if i % 2:
                assert get(server, "/sleep?s=10").status == 504
            else:
                assert h2.get(f"http://{server.host}:{server.port}/sleep?s=10").status_code == 504
    with rawhttp.Connection(server.host, server.port, timeout=30) as c:
        c.send(rawhttp.build_request("GET", "/stream?s=10", []))
        assert c.read_head().status == 200
        assert b"0\r\n\r\n" not in c.read_until_closed()  # cut off, not completed
    lines = [x for x in server.stderr().splitlines() if "ran past --timeout-request" in x]
    assert len(lines) == 1 and "timed_out=1" in lines[0], server.stderr_tail()
    assert "at most every 10 s" in lines[0], lines


def test_a_file_size_limit_below_the_shared_memory_is_named(servers: ServerFactory) -> None:
    """A memfd's size counts against RLIMIT_FSIZE: under `ulimit -f 8` a worker's shared
    memory cannot be made. The error said to check memfd and memory; it names the limit."""
    server = spawn_with_limit(servers, "FSIZE", 8192)
    assert server.wait_exit(30) not in (None, 0), server.diagnostics()
    log = server.stderr()
    assert "error: cannot create shared memory for worker 0" in log, log
    assert "File too large" in log and "hint: the file size limit (ulimit -f)" in log, log


def test_connection_limit_defaults_from_the_fd_limit(servers: ServerFactory) -> None:
    # Soft and hard fd limit 128: the default is (128 - 32 reserved, a quarter of a limit
    # this small) / 1 thread = 96 connections (with 256 reserved, as for larger limits, it
    # was 1). Start-up warns that the limit is low. The 97th is closed at once, and the log
    # says so once, not per refusal.
    server = start_with_fd_limit(servers, 128)
    log = server.stderr()
    assert "connection limit: 96 per front-end thread" in log, server.stderr_tail()
    assert "the fd limit (128) leaves room for only 96 connections" in log, server.stderr_tail()
    held = []
    try:
        # wait_ready's probes are closed, but the thread may still count one for a moment:
        # a refused connection is retried (bounded).
        deadline = time.monotonic() + 60
        while len(held) < 96:
            c = rawhttp.Connection(server.host, server.port, timeout=30)
            try:
                assert c.request("GET", "/pid").status == 200
                held.append(c)
            except (OSError, AssertionError):
                c.close()
                assert time.monotonic() < deadline, f"only {len(held)} connections taken"
                time.sleep(0.1)
        refused = 0
        for _ in range(5):
            with rawhttp.Connection(server.host, server.port, timeout=30) as c:
                try:
                    c.send(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
                    refused += c.closed_by_peer()
                except OSError:
                    refused += 1
        assert refused == 5
    finally:
        for c in held:
            c.close()
    log = server.stderr()
    assert log.count("--limit-connections reached") == 1, log
    # Room again once connections close.
    deadline = time.monotonic() + 30
    while True:
        try:
            assert get(server, "/pid", timeout=5).status == 200
            break
        except (OSError, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    server.stop()


def test_as_pid_1_orphans_are_reaped(servers: ServerFactory) -> None:
    """A container's entrypoint is PID 1 (the Kubernetes manifest in tuning/deploy runs
    `uringapi` so): every orphan in the container becomes its child. A process the app
    started in the background, whose parent has gone, stayed a zombie for as long as the
    server ran (one per request here). Run as PID 1 of a new PID namespace."""
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("unshare --pid cannot make a PID namespace here")
    port = free_port()
    cmd = server_command(APP, port, 1, 1, APPS_DIR, "info", ())
    server = Server(["unshare", "--pid", "--fork", "--mount-proc", *cmd], port, 1, 1,
                    servers.log_root / f"pid1-{port}", server_env())
    servers.servers.append(server)
    server.wait_ready("/pid")
    front = next(int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split())

    def orphans() -> list[str]:
        """The state of each `sleep` among the server's children (Z: a zombie)."""
        states = []
        for pid in Path(f"/proc/{front}/task/{front}/children").read_text().split():
            try:
                name, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(" (")[2].rpartition(")")
            except FileNotFoundError:
                continue  # reaped meanwhile
            if name == "sleep":
                states.append(rest.split()[0])
        return states

    for _ in range(5):
        assert get(server, "/orphan").status == 200
    # Each orphan sleeps 0.1 s, then exits, and must then be reaped, not left a zombie.
    deadline = time.monotonic() + 10
    while orphans():
        assert time.monotonic() < deadline, f"orphans left (Z: zombie): {orphans()}"
        time.sleep(0.1)
    assert get(server, "/pid").status == 200
    # Stopped through the server itself (unshare does not pass SIGTERM on).
    os.kill(front, signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.stderr_tail()


def test_accepts_failing_at_the_fd_limit_log_once_and_recover(servers: ServerFactory) -> None:
    """With --limit-connections 0 (no limit of ours) a client can open connections until
    accept fails with EMFILE. The thread retries every 10 ms; the log said so on every retry
    (about 100 warnings a second for as long as the connections stayed): now once per 10 s,
    with the count and a hint. Once connections close, the waiting ones are served."""
    server = start_with_fd_limit(servers, 120, "--limit-connections", "0")
    held = [socket.create_connection((server.host, server.port), timeout=30) for _ in range(150)]
    try:
        # Each connected socket is either the front end's or waits in the listen queue; the
        # first one was accepted, and answers.
        held[0].sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(64).startswith(b"HTTP/1.1 200"), server.stderr_tail()
        server.wait_log("accept failed", 30)
        time.sleep(1.5)  # about 150 retries
        log = server.stderr()
        assert log.count("accept failed") == 1, server.stderr_tail()
        assert "Too many open files" in log and "failed=1 " in log, server.stderr_tail()
        assert "the fd limit is reached" in log, server.stderr_tail()
        # The last one waits in the listen queue, and is answered once others close.
        held[-1].sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in held[1:-1]:
            c.close()
        assert held[-1].recv(64).startswith(b"HTTP/1.1 200"), server.stderr_tail()
    finally:
        for c in held:
            c.close()
    assert get(server, "/pid", timeout=10).status == 200
    server.stop()
