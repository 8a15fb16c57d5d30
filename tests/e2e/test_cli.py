"""The `uringapi serve` command line: the built-in demo app, the startup line, and
startup failures that end the server with `error:`/`hint:` instead of a respawn loop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rawhttp
from harness import HOST, URINGAPI_BIN, Server, ServerFactory

pytestmark = pytest.mark.uringapi_only

# A hang guard (a respawn loop would never exit), not a speed requirement.
EXIT_TIMEOUT = 30.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stderr_lines(server: Server) -> list[str]:
    return [ANSI.sub("", line) for line in server.stderr().splitlines()]


def assert_failed_cleanly(server: Server, *must_mention: str) -> None:
    rc = server.wait_exit(EXIT_TIMEOUT)
    if rc is None:
        server.kill()
        pytest.fail(f"server still running after {EXIT_TIMEOUT}s (respawn loop?)\n"
                    f"{server.diagnostics()}", pytrace=False)
    assert rc != 0, f"exit code 0 for a failed startup\n{server.diagnostics()}"
    lines = stderr_lines(server)
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    hints = [i for i, line in enumerate(lines) if line.startswith("hint: ")]
    assert errors, f"no line starting 'error: '\n{server.diagnostics()}"
    assert hints and hints[-1] > errors[0], f"no 'hint: ' line after the error\n{server.diagnostics()}"
    text = "\n".join(lines)
    for needle in must_mention:
        assert needle in text, f"stderr does not mention {needle!r}\n{server.diagnostics()}"
    assert server.wait_group_gone(5.0) == [], "worker processes outlived the server"


def count_events(log: Path, event: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[0] == event)


def test_help_lists_serve_flags() -> None:
    out = subprocess.run([str(URINGAPI_BIN), "serve", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for flag in ("--host", "--port", "--workers", "--threads", "--app-dir", "--log-level"):
        assert flag in out.stdout, f"{flag} missing from `uringapi serve --help`"


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"], ["-V"]])
def test_version_names_uringapi(args: list[str]) -> None:
    out = subprocess.run([str(URINGAPI_BIN), *args], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"uringapi \d+\.\d+\.\d+\n", out.stdout), out.stdout


def test_no_app_serves_builtin_demo(servers: ServerFactory) -> None:
    server = servers.start(None, workers=1, threads=1, app_dir=None)
    with rawhttp.Connection(server.host, server.port) as c:
        r = c.request("GET", "/")
    assert r.status == 200
    assert r.header("content-type").startswith("text/plain")
    assert r.body.startswith(b"Hello from uringapi")
    server.stop()


def test_startup_line_names_address_workers_and_driver(servers: ServerFactory) -> None:
    server = servers.start(None, workers=3, threads=1, app_dir=None)
    needle = f"listening on http://{HOST}:{server.port}"
    deadline = time.monotonic() + 10
    while not (lines := [line for line in stderr_lines(server) if needle in line]):
        assert time.monotonic() < deadline, f"no line with {needle!r}\n{server.diagnostics()}"
        time.sleep(0.05)
    line = lines[0]
    assert re.search(r"\b3 workers?\b|\bworkers?\s*[=:]?\s*3\b", line), f"worker count missing: {line!r}"
    assert "io_uring" in line or "epoll" in line, f"I/O driver missing: {line!r}"
    server.stop()


def test_startup_line_gives_small_shared_memory_in_kib(servers: ServerFactory) -> None:
    """4 KiB slots, 16 to a direction: the shared memory is under a MiB (it said "0 MiB")."""
    server = servers.start(None, workers=1, threads=1, app_dir=None,
                           extra_args=("--slot-size", "4096", "--channel-slots", "16"))
    line = next(x for x in stderr_lines(server) if "listening on" in x)
    kib = re.search(r"shared memory: (\d+) KiB\)", line)
    assert kib and 128 <= int(kib.group(1)) < 1024, line
    server.stop()


@pytest.mark.parametrize("workers", [1, 2], ids=["w1", "w2"])
def test_app_failing_at_import(servers: ServerFactory, tmp_path: Path, workers: int) -> None:
    log = tmp_path / "events.log"
    server = servers.spawn("bad_import:app", workers=workers,
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)})
    assert_failed_cleanly(server, "bad_import", "fails to import on purpose")
    imports = count_events(log, "import")
    assert 1 <= imports <= workers, f"app imported {imports} times by {workers} worker(s): respawned"


@pytest.mark.parametrize(
    ("app", "mentions"),
    [
        ("no_such_module_e2e:app", ["no_such_module_e2e"]),
        ("fastapi_app:no_such_attribute", ["no_such_attribute"]),
    ],
    ids=["missing-module", "missing-attribute"],
)
def test_app_that_cannot_be_found(servers: ServerFactory, app: str, mentions: list[str]) -> None:
    assert_failed_cleanly(servers.spawn(app, workers=2), *mentions)


def test_a_python_without_uringapi_is_named(servers: ServerFactory) -> None:
    """--python naming an interpreter that lacks uringapi (the venv's base Python): the
    worker cannot even start, and the hint says what that Python needs."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    server = servers.spawn("fastapi_app:app", extra_args=("--python", str(base)))
    assert_failed_cleanly(server, "No module named 'uringapi'",
                          "hint: see the worker's output above; the workers' Python (--python) "
                          "needs uringapi and the app's packages installed")


def test_an_app_that_ends_its_process_on_import(servers: ServerFactory, tmp_path: Path) -> None:
    """os._exit(0) while the worker imports the app: nothing could be reported, and the
    hint says where the process ended rather than blaming the install."""
    (tmp_path / "exits_on_import.py").write_text("import os\nos._exit(0)\n")
    server = servers.spawn("exits_on_import:app", app_dir=tmp_path)
    assert_failed_cleanly(server, "error: worker 0 exited (exit status: 0) before it was ready",
                          "the process ended while it imported the app or ran its startup")


def test_app_with_syntax_error(servers: ServerFactory, tmp_path: Path) -> None:
    # Written here, not kept in tests/apps, so no linter or compileall trips on it.
    (tmp_path / "broken_syntax.py").write_text("def app(:\n    pass\n")
    server = servers.spawn("broken_syntax:app", workers=2, app_dir=tmp_path)
    assert_failed_cleanly(server, "broken_syntax", "SyntaxError")


@pytest.mark.parametrize("workers", [1, 2], ids=["w1", "w2"])
def test_lifespan_startup_failure(servers: ServerFactory, tmp_path: Path, workers: int) -> None:
    log = tmp_path / "events.log"
    server = servers.spawn("bad_lifespan:app", workers=workers,
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)})
    assert_failed_cleanly(server, "db down")
    attempts = count_events(log, "startup")
    assert 1 <= attempts <= workers, f"lifespan ran {attempts} times for {workers} worker(s): respawned"


def test_a_worker_startup_timeout_of_zero_means_no_limit(servers: ServerFactory) -> None:
    """0 turns a timeout off everywhere else (--timeout, --timeout-header-read, ...); here it
    used to fail every start at once ("workers did not become ready within 0 s")."""
    server = servers.start(None, app_dir=None, extra_args=("--timeout-worker-startup", "0"))
    with rawhttp.Connection(server.host, server.port) as c:
        assert c.request("GET", "/").status == 200


@pytest.mark.parametrize("group", [False, True], ids=["front-end", "process-group"])
def test_a_slow_start_is_reported_and_a_stop_then_shuts_the_ready_workers_down(
        servers: ServerFactory, tmp_path: Path, group: bool) -> None:
    """A worker whose lifespan startup does not end (a database that does not answer) left
    the server silent; stopped then, the workers that were ready were killed without their
    lifespan shutdown, and a SIGTERM to the whole group (systemd stopping the unit) was
    reported as a failed start ("worker 1 exited (signal: 15) before it was ready", exit 1).
    The wait is now reported, and a stop shuts the ready workers down, ends the others and
    exits 0."""
    log = tmp_path / "events.log"
    server = servers.spawn("slow_start_app:app", workers=2,
                           env={"URINGAPI_TEST_EVENT_LOG": str(log)})
    server.wait_log(r"INFO waiting for the workers: 1 of 2 ready after 5 s \(each imports the "
                    r"app and runs its lifespan startup; --timeout-worker-startup is 60 s\)", 30)
    if group:
        os.killpg(server.pgid, signal.SIGTERM)
    else:
        server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.diagnostics()
    assert "stopping before serving: 1 of 2 workers were ready" in server.stderr()
    assert count_events(log, "shutdown") == 1, server.diagnostics()


def test_a_startup_past_its_timeout_ends_with_where_it_was(servers: ServerFactory,
                                                          tmp_path: Path) -> None:
    """Past --timeout-worker-startup the front end said only "workers did not become ready";
    now each stuck worker logs where it was, as a traceback of its cancelled lifespan
    startup (worker 1 of slow_start_app waits for ever there) or the stack of its import
    (ops_app waits while its hold file exists), and the error names the phase."""
    server = servers.spawn("slow_start_app:app", workers=2,
                           env={"URINGAPI_TEST_EVENT_LOG": str(tmp_path / "events.log")},
                           extra_args=("--timeout-worker-startup", "2"))
    assert_failed_cleanly(server, "error: the app's lifespan startup did not finish within 2 s")
    text = "\n".join(stderr_lines(server))
    assert re.search(r"ERROR worker\[1:\d+\] uringapi.error: lifespan startup still running at "
                     r"the end of --timeout-worker-startup: cancelled; it was here:\nTraceback"
                     r"[^\n]*\n(?:  .*\n)*?  File \"[^\"]*slow_start_app.py\", line \d+, in app",
                     text), text

    hold = tmp_path / "hold"
    hold.touch()
    server = servers.spawn("ops_app:app", env={"URINGAPI_TEST_IMPORT_HOLD": str(hold)},
                           extra_args=("--timeout-worker-startup", "2"))
    assert_failed_cleanly(server, "error: importing the app did not finish within 2 s")
    text = "\n".join(stderr_lines(server))
    assert re.search(r"importing the app \(ops_app:app\) still running after 2\.0 s "
                     r"\(--timeout-worker-startup\); it is here:\n(?:  .*\n)*?  File "
                     r"\"[^\"]*ops_app.py\", line \d+, in <module>", text), text


def test_a_replacement_stuck_starting_ends_and_the_old_worker_serves_on(
        servers: ServerFactory, tmp_path: Path) -> None:
    """A rolling restart (SIGHUP) whose new worker never finished its lifespan startup
    waited for ever, silently: --timeout-worker-startup held only for the first workers.
    The replacement now ends at it, the log says why, and the old worker serves on; the next
    SIGHUP tries again. (slow_start_app's worker slot 1, the replacement's, never starts.)"""
    server = servers.start("slow_start_app:app", workers=1,
                           env={"URINGAPI_TEST_EVENT_LOG": str(tmp_path / "events.log")},
                           extra_args=("--timeout-worker-startup", "2"))
    server.proc.send_signal(signal.SIGHUP)
    # One line, the worker's hint included (it was a second line, without a timestamp).
    server.wait_log(r"ERROR replacement for worker 0 exited before it was ready: error: the "
                    r"app's lifespan startup did not finish within 2 s; hint: .+; keeping "
                    r"worker 0 worker=1", 30)
    with rawhttp.Connection(server.host, server.port) as c:
        assert c.request("GET", "/").status == 200
    assert server.proc.poll() is None, server.diagnostics()


def test_a_replacement_that_cannot_time_itself_is_killed_at_the_limit(
        servers: ServerFactory) -> None:
    """A replacement stuck in C code that holds the GIL (gil_hang_app: every worker slot but
    0) cannot keep --timeout-worker-startup itself; the front end ends it 2 s past the limit,
    SIGABRT first so that its Python stack is printed, and the old worker serves on."""
    server = servers.start("gil_hang_app:app", workers=1,
                           extra_args=("--timeout-worker-startup", "1", "--lifespan", "off"))
    with rawhttp.Connection(server.host, server.port) as c:
        before = c.request("GET", "/").body
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"ERROR worker not ready \d+ s after it started \(--timeout-worker-startup\); "
                    r"killing it \(SIGABRT prints its Python stack\) worker=1", 30)
    server.wait_log(r"ERROR replacement for worker 0 exited before it was ready.*keeping worker 0",
                    30)
    assert re.search(r'File "[^"]*gil_hang_app.py", line \d+ in <module>', server.stderr()), \
        server.stderr()
    with rawhttp.Connection(server.host, server.port) as c:
        assert c.request("GET", "/").body == before


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so-reuseport"])
def test_port_in_use(servers: ServerFactory, reuse_port: bool) -> None:
    """Also when the listener there set SO_REUSEPORT, as a second uringapi's listeners do: the
    kernel would let us bind beside it and split the connections between the two servers."""
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = servers.spawn(None, app_dir=None, port=port)
        assert_failed_cleanly(server, str(port))


@pytest.mark.uringapi_only
def test_a_second_server_on_the_same_port_exits(servers: ServerFactory) -> None:
    first = servers.start(None, app_dir=None)
    second = servers.spawn(None, app_dir=None, port=first.port)
    assert_failed_cleanly(second, str(first.port), "another process is listening")
    assert first.proc.poll() is None
