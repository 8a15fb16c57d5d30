"""What a uvicorn or granian user types works here too: configuration from the environment,
inherited sockets (--fd, systemd socket activation), host names, --factory, --env-file,
python -m uringapi, uringapi.run(), --header, --log-config and sd_notify.

Each test starts the real front end (the `uringapi` console script, which execs the Rust
binary) and talks to it over real sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rawhttp
from harness import APPS_DIR, HOST, URINGAPI_BIN, ServerFactory, free_port, server_env

pytestmark = pytest.mark.uringapi_only

# Hang guards, not speed requirements.
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0


def get(port: int, path: str = "/", host: str = HOST) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET; status, lower-cased headers, body."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def wait_answer(proc: subprocess.Popen, port: int, host: str = HOST) -> tuple[int, dict[str, str], bytes]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"server exited with {proc.returncode} before answering:\n{out}")
        try:
            return get(port, host=host)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("server did not answer in time")
            time.sleep(0.05)


def start(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(args, env=server_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, **kw)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("server did not stop on SIGTERM")


def assert_usage_error(args: list[str], env: dict[str, str] | None = None, *mentions: str, **kw) -> None:
    out = subprocess.run(args, env=server_env(env), capture_output=True, text=True,
                         timeout=EXIT_TIMEOUT, **kw)
    assert out.returncode == 2, f"exit {out.returncode}\n{out.stderr}"
    lines = out.stderr.splitlines()
    assert any(line.startswith("error: ") for line in lines), out.stderr
    assert any(line.startswith("hint: ") for line in lines), out.stderr
    for m in mentions:
        assert m in out.stderr, out.stderr


def serve_cmd(*extra: str) -> list[str]:
    return [str(URINGAPI_BIN), "serve", *extra]


def test_a_server_configured_only_through_the_environment() -> None:
    port = free_port()
    env = {
        "URINGAPI_APP": "env_app:app",
        "URINGAPI_APP_DIR": str(APPS_DIR),
        "URINGAPI_HOST": HOST,
        "URINGAPI_PORT": str(port),
        "URINGAPI_WORKERS": "1",
        "URINGAPI_THREADS": "1",
        "URINGAPI_HEADER": "x-configured-by: environment",
        "URINGAPI_NO_SERVER_HEADER": "true",
        "GREETING": "hello from env",
    }
    proc = start(serve_cmd(), env)
    try:
        status, headers, body = wait_answer(proc, port)
        assert (status, body) == (200, b"hello from env")
        assert headers.get("x-configured-by") == "environment"
        assert "server" not in headers
        # --header applies to the front end's own answers too (here a 400).
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.sendall(b"NOT HTTP\r\n\r\n")
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400") and b"x-configured-by: environment\r\n" in answer, answer
    finally:
        assert stop(proc) == 0



def test_a_server_configured_through_uvicorns_variables() -> None:
    """A container image's `ENV UVICORN_HOST=... UVICORN_PORT=...` (uvicorn reads every
    option from UVICORN_<OPTION>) carries over for the options that mean the same here."""
    port = free_port()
    env = {"UVICORN_APP": "env_app:app", "UVICORN_APP_DIR": str(APPS_DIR), "UVICORN_HOST": HOST,
           "UVICORN_PORT": str(port), "UVICORN_WORKERS": "1", "UVICORN_LOG_LEVEL": "DEBUG",
           "GREETING": "uvicorn's variables"}
    proc = start(serve_cmd(), env)
    try:
        status, _, body = wait_answer(proc, port)
        assert (status, body) == (200, b"uvicorn's variables")
    finally:
        assert stop(proc) == 0
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "workers: 1," in log and " DEBUG " in log, log
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR)), {"UVICORN_PORT": "eighty"},
                       "eighty", "UVICORN_PORT")

def test_help_shows_each_variable() -> None:
    out = subprocess.run(serve_cmd("--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for var in ("URINGAPI_PORT", "URINGAPI_LIMIT_QUEUE", "URINGAPI_FACTORY", "URINGAPI_ENV_FILE"):
        assert f"env: {var}" in out.stdout, var


@pytest.mark.parametrize(("args", "env", "workers"), [
    ([], {"WEB_CONCURRENCY": "3"}, 3),
    ([], {"WEB_CONCURRENCY": "3", "URINGAPI_WORKERS": "1"}, 1),
    (["--workers", "2"], {"WEB_CONCURRENCY": "3"}, 2),
    ([], {"WEB_CONCURRENCY": "3", "UVICORN_WORKERS": "1"}, 1),
    ([], {"UVICORN_WORKERS": "3", "URINGAPI_WORKERS": "1"}, 1),
], ids=["web-concurrency", "ours-wins", "flag-wins", "uvicorns-beats-web-concurrency", "ours-beats-uvicorns"])
def test_web_concurrency_sets_the_workers_as_under_uvicorn_and_gunicorn(
        args: list[str], env: dict[str, str], workers: int) -> None:
    port = free_port()
    proc = start(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--port", str(port), *args),
                 env)
    try:
        assert wait_answer(proc, port)[0] == 200
    finally:
        assert stop(proc) == 0
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert f"workers: {workers}," in log, log


def test_a_bad_web_concurrency_names_itself() -> None:
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR)),
                       {"WEB_CONCURRENCY": "lots"}, "lots", "WEB_CONCURRENCY")


@pytest.mark.parametrize(("var", "value", "more"), [("URINGAPI_WORKERS", "many", "--workers"),
                                                     ("URINGAPI_LIFESPAN", "sometimes", "auto, on, off"),
                                                     ("URINGAPI_TIMEOUT", "soon", "soon")])
def test_a_bad_environment_value_is_a_usage_error_that_names_the_variable(
        var: str, value: str, more: str) -> None:
    # The option is not on the command line: the hint names the variable the value came
    # from (and, for a choice, what the option takes).
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR)), {var: value}, value,
                       f"hint: the value is {var}'s", more)


@pytest.mark.parametrize(("flag", "value"), [("--timeout-keep-alive", "inf"),
                                              ("--timeout-header-read", "1e400"),
                                              ("--timeout-body-read", "nan"),
                                              ("--queue-timeout", "-1"),
                                              ("--timeout-graceful-shutdown", "-inf"),
                                              ("--recycle-jitter", "NaN")])
def test_a_time_that_is_not_a_finite_number_is_a_usage_error(flag: str, value: str) -> None:
    """f64 parses inf and nan: `inf` used to start a server whose first connection panicked
    its front-end thread (a deadline past what an Instant can hold), and `nan` meant 0."""
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), f"{flag}={value}"),
                       None, flag, "not a finite number")


@pytest.mark.parametrize(("args", "hint"), [
    (["--loop", "uvloop"], "always run uvloop"),
    (["--http", "httptools"], "parses HTTP itself"),
    (["--ws=wsproto"], "frames WebSockets itself"),
    (["--interface", "asgi3"], "ASGI 3"),
    (["--timeout-notify", "30"], "no counterpart"),
    (["-b", "0.0.0.0:8000"], "--host and --port"),
    (["-k", "uvicorn.workers.UvicornWorker"], "runs its own workers"),
    (["--graceful-timeout", "30"], "--timeout-graceful-shutdown"),
    (["--runtime-threads", "2"], "no counterpart"),
    (["--http", "zttp"], "parses HTTP itself"),
    (["--http2"], "served by ALPN over TLS and by the client preface"),
    (["--limit-max-requests-jitter", "100"], "--recycle-jitter"),
    (["--timeout-worker-healthcheck", "5"], "--timeout (60 s by default)"),
    (["--reset-contextvars"], "context of its own"),
    (["--ssl-certificate", "c.pem"], "that is --ssl-certfile here"),
    (["--url-path-prefix", "/api"], "that is --root-path here"),
    (["--http2-max-concurrent-streams", "50"], "--h2-max-concurrent-streams"),
    (["--http2-keep-alive-interval", "10"], "no counterpart"),
    (["--certfile", "c.pem"], "that is --ssl-certfile here"),
    (["--limit-request-field_size", "100"], "--limit-request-field-size"),
    (["-c", "gunicorn.conf.py"], "no config file"),
    (["--daemon"], "stays in the foreground"),
    (["--proxy-protocol"], "no counterpart"),
])
def test_a_foreign_option_says_what_to_do(args: list[str], hint: str) -> None:
    """A uvicorn, gunicorn or granian command line moved over: each option spelt otherwise
    or meaningless here is a usage error whose hint says what to do with it."""
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), *args), None,
                       args[0].split("=")[0], hint)


@pytest.mark.parametrize(("args", "hint"), [
    (["serve", "--worker", "2"], "hint: did you mean --workers?"),
    (["serve", "--timeout-keepalive", "5"], "hint: did you mean --timeout-keep-alive?"),
    (["serve", "--io-driver", "io_uring"],
     "hint: did you mean --io-driver uring? (--io-driver takes one of: auto, uring, epoll)"),
    (["serve", "--log-level", "verbose"],
     "hint: --log-level takes one of: critical, error, warning, info, debug, trace"),
    (["serve", "--http", "3"], "hint: --http takes one of: auto, 1, 2"),
    (["serv"], "hint: did you mean 'uringapi serve'?"),
])
def test_a_near_miss_names_what_was_meant(args: list[str], hint: str) -> None:
    """A misspelt option, a value not among an option's choices, a misspelt command: the
    hint says what was probably meant and what the option takes, not only to read --help."""
    command = [str(URINGAPI_BIN), *args]
    if args[0] == "serve":
        command[2:2] = ["env_app:app", "--app-dir", str(APPS_DIR)]
    assert_usage_error(command, None, hint)


def test_a_host_name_that_does_not_resolve_says_what_host_takes() -> None:
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--host", "no-such-host.invalid"),
                       None, "does not resolve", "give --host an IP address")


@pytest.mark.parametrize(("host", "write"), [("0.0.0.0:8000", "--host 0.0.0.0 --port 8000"),
                                            ("http://localhost:8000", "--host localhost --port 8000")])
def test_a_host_with_a_port_or_a_scheme_says_what_to_write(host: str, write: str) -> None:
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--host", host),
                       None, "--host takes the address alone", f"hint: write {write}")


@pytest.mark.parametrize(("given", "use"), [
    ("main.py", "uringapi serve main:app`"),
    ("app/main.py:app", "uringapi serve app.main:app`"),
    (str(APPS_DIR / "env_app.py") + ":app", f"uringapi serve env_app:app --app-dir {APPS_DIR}`"),
])
def test_an_app_given_as_a_file_path_gets_the_module_name_to_use(given: str, use: str) -> None:
    """`uringapi serve main.py` (or `path/to/main.py:app`) is a common first try; it got "not
    of the form module:attribute" or a worker's import traceback. Now: what to type."""
    out = subprocess.run(serve_cmd(given), env=server_env(None), capture_output=True, text=True,
                         timeout=EXIT_TIMEOUT)
    assert out.returncode == 1, f"exit {out.returncode}\n{out.stderr}"
    assert f'error: app "{given}" names a file' in out.stderr, out.stderr
    assert "hint: " in out.stderr and use in out.stderr, out.stderr


def test_an_app_without_the_serve_subcommand_says_to_add_it() -> None:
    assert_usage_error([str(URINGAPI_BIN), "env_app:app", "--workers", "2"], None,
                       "uringapi serve MODULE:APP")


def test_uvicorns_spelling_of_the_header_and_access_log_switches(servers: ServerFactory,
                                                                  tmp_path: Path) -> None:
    """`--no-access-log`, `--server-header` and `--date-header` as uvicorn has them: the
    later of a pair wins, so an access log turned on elsewhere can be turned off."""
    log = tmp_path / "access.log"
    server = servers.start("env_app:app", app_dir=APPS_DIR, extra_args=(
        "--access-log", "--access-log-file", str(log), "--no-access-log",
        "--no-server-header", "--server-header", "--date-header"))
    with rawhttp.Connection(server.host, server.port) as c:
        r = c.request("GET", "/")
    assert r.status == 200
    assert r.header("server") == "uringapi" and r.header("date"), r.headers
    server.stop()
    assert not log.exists() or log.read_text() == ""



def test_uvicorns_spelling_of_values(servers: ServerFactory) -> None:
    """uvicorn takes `--log-level` in any case and its booleans as click does (1/0,
    yes/no, on/off...): a unit file or an environment with `LOG_LEVEL=DEBUG` moves over."""
    server = servers.start("env_app:app", app_dir=APPS_DIR, extra_args=(
        "--log-level", "DEBUG", "--ws-per-message-deflate", "off"))
    server.wait_log(" DEBUG ", timeout=READY_TIMEOUT)
    server.stop()
    assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--ws-per-message-deflate",
                                 "maybe"), None, "--ws-per-message-deflate")

def test_python_m_factory_localhost_and_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text('# settings\nexport GREETING="from the file"\nOTHER=1\n')
    port = free_port()
    proc = start([sys.executable, "-m", "uringapi", "serve", "env_app:create_app", "--factory",
                  "--host", "localhost", "--port", str(port), "--env-file", str(env_file),
                  "--app-dir", str(APPS_DIR), "--workers", "1", "--threads", "1"])
    try:
        status, _, body = wait_answer(proc, port, host="127.0.0.1")
        assert (status, body) == (200, b"factory:from the file")
        # Every address the name resolves to is bound (here: those getaddrinfo gives).
        for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM):
            status, _, body = get(port, host=info[4][0])
            assert (status, body) == (200, b"factory:from the file"), info
    finally:
        assert stop(proc) == 0


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_literal_host() -> None:
    port = free_port()
    proc = start(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--host", "::1", "--port", str(port),
                           "--workers", "1"), {"GREETING": "v6"})
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                assert get(port, host="::1")[2] == b"v6"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        assert stop(proc) == 0


def test_missing_env_file_and_bad_host_are_usage_errors(tmp_path: Path) -> None:
    base = serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--port", str(free_port()))
    assert_usage_error(base + ["--env-file", str(tmp_path / "nope.env")], None, "nope.env")
    assert_usage_error(base + ["--host", "no-such-host.invalid"], None, "no-such-host.invalid")
    assert_usage_error(base + ["--header", "bad header: x"], None, "header")
    # A root path without its leading slash would prefix every path with "api" (no route matches).
    assert_usage_error(base + ["--root-path", "api"], None, "--root-path", "/api")
    assert_usage_error(base, {"URINGAPI_ROOT_PATH": "api/v1"}, "/api/v1")
    # So would a health path: the balancer's check would reach the app instead.
    assert_usage_error(base + ["--health-path", "healthz"], None, "--health-path", "/healthz")
    assert_usage_error(base + ["--health-path", ""], None, "--health-path")
    # A largest WebSocket message of 0 bytes would close every WebSocket with 1009.
    assert_usage_error(base + ["--ws-max-size", "0"], None, "--ws-max-size")


def test_fd_serves_an_inherited_socket() -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    proc = start(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--fd", str(sock.fileno()),
                           "--workers", "1", "--threads", "2"), {"GREETING": "via fd"},
                 pass_fds=(sock.fileno(),))
    sock.close()
    try:
        for _ in range(4):
            status, _, body = wait_answer(proc, port)
            assert (status, body) == (200, b"via fd")
    finally:
        assert stop(proc) == 0


LAUNCHER = r"""
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.argv[2], sys.argv[2:], env)
"""


def test_socket_activation_with_listen_fds() -> None:
    port = free_port()
    proc = start([sys.executable, "-c", LAUNCHER, str(port), str(URINGAPI_BIN), "serve",
                  "env_app:app", "--app-dir", str(APPS_DIR), "--workers", "1"],
                 {"GREETING": "activated"})
    try:
        status, _, body = wait_answer(proc, port)
        assert (status, body) == (200, b"activated")
    finally:
        assert stop(proc) == 0


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_systemd_socket_activate() -> None:
    port = free_port()
    proc = start(["systemd-socket-activate", "-l", f"{HOST}:{port}", "-E", "GREETING", str(URINGAPI_BIN), "serve",
                  "env_app:app", "--app-dir", str(APPS_DIR), "--workers", "1"],
                 {"GREETING": "systemd"})
    try:
        status, _, body = wait_answer(proc, port)
        assert (status, body) == (200, b"systemd")
    finally:
        assert stop(proc) == 0


def test_inherited_fds_that_are_not_listening_sockets_are_refused(tmp_path: Path) -> None:
    with open(os.devnull) as f:
        assert_usage_error(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--fd", str(f.fileno())),
                           None, "not an open socket", pass_fds=(f.fileno(),))
    launcher = LAUNCHER.replace('s.listen(128)\n', '').replace("s = socket.socket()", "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)")
    assert_usage_error([sys.executable, "-c", launcher, str(free_port()), str(URINGAPI_BIN), "serve",
                        "env_app:app", "--app-dir", str(APPS_DIR)], None, "LISTEN_FDS")


@pytest.mark.parametrize("to", ["process", "group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_uringapi_run_serves_and_passes_signals_on(sig: int, to: str) -> None:
    """A signal to the Python process is passed on; one to its whole group (Ctrl-C in a
    terminal, systemd's control-group stop) reaches the front end twice, directly and passed
    on, and must still be one graceful drain (a second signal would stop at once): the
    request in flight is answered."""
    port = free_port()
    code = ("import uringapi; uringapi.run('env_app:app', app_dir=%r, host=%r, port=%d, workers=1, "
            "threads=1, header=['x-run: yes'], access_log=False)" % (str(APPS_DIR), HOST, port))
    proc = start([sys.executable, "-c", code], {"GREETING": "run()"})
    try:
        status, headers, body = wait_answer(proc, port)
        assert (status, body, headers.get("x-run")) == (200, b"run()", "yes")
        with socket.create_connection((HOST, port), timeout=EXIT_TIMEOUT) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)  # the request is in flight (it takes a second)
            if to == "group":
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            answer = b""
            while b"run()" not in answer and (chunk := s.recv(4096)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"run()"), answer
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    finally:
        stop(proc)
    with pytest.raises(OSError):
        get(port)


SERVICE = """\
from fastapi import FastAPI

import uringapi

app = FastAPI()


@app.get("/")
def where() -> dict:
    return {"module": __name__}

"""
RUN_GUARDED = 'if __name__ == "__main__":\n    uringapi.run(app, host=%r, port=%d, workers=1)\n'


@pytest.mark.parametrize("how", ["script", "module"])
def test_uringapi_run_takes_the_app_object_as_uvicorn_run_does(tmp_path: Path, how: str) -> None:
    """`uringapi.run(app)` under `if __name__ == "__main__":`, the FastAPI tutorials' form:
    the workers import the script (or `-m` module) by name from its own folder, not the
    current one, and the guarded call does not run again in them."""
    port = free_port()
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text("")
    (tmp_path / "svc" / "my_service.py").write_text(SERVICE + RUN_GUARDED % (HOST, port))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if how == "script":
        args, cwd, module = [sys.executable, str(tmp_path / "svc" / "my_service.py")], elsewhere, "my_service"
    else:
        args, cwd, module = [sys.executable, "-m", "svc.my_service"], tmp_path, "svc.my_service"
    proc = start(args, cwd=cwd)
    try:
        status, _, body = wait_answer(proc, port)
        assert (status, json.loads(body)) == (200, {"module": module})
    finally:
        assert stop(proc) == 0


def test_uringapi_run_outside_the_main_guard_stops_with_a_hint(tmp_path: Path) -> None:
    """Unguarded, the call runs again when a worker imports the script: it must fail with a
    message that says so, not start a second server."""
    script = tmp_path / "unguarded.py"
    script.write_text(SERVICE + "uringapi.run(app, host=%r, port=%d, workers=1)\n" % (HOST, free_port()))
    out = subprocess.run([sys.executable, str(script)], env=server_env(), capture_output=True, text=True,
                         timeout=EXIT_TIMEOUT * 2)
    assert out.returncode != 0, out.stderr
    assert "uringapi.run() was called while a uringapi worker imported the app" in out.stderr, out.stderr
    assert 'if __name__ == "__main__":' in out.stderr, out.stderr


def test_uringapi_run_names_an_app_object_it_cannot_find() -> None:
    code = "import uringapi\nfrom fastapi import FastAPI\nuringapi.run(FastAPI(), port=%d)" % free_port()
    out = subprocess.run([sys.executable, "-c", code], env=server_env(), capture_output=True, text=True,
                         timeout=EXIT_TIMEOUT)
    assert out.returncode == 1, out.stderr
    assert "TypeError: uringapi.run could not find" in out.stderr, out.stderr
    assert "uringapi.run('main:app')" in out.stderr, out.stderr


def test_uringapi_run_spells_switches_off_as_uvicorn_run_does() -> None:
    """`False` for a switch that is on by default must turn it off, not be left out (which
    would leave it on); uvicorn.run's `headers` list of pairs is `--header`."""
    from uringapi import serve_args

    assert serve_args("m:app", server_header=False, date_header=False, proxy_headers=False,
                      access_log=False, use_colors=False, reload=False, ws_per_message_deflate=False,
                      headers=[("x-a", "1")], header=["x-b: 2"], root_path=None) == [
        "serve", "m:app", "--no-server-header", "--no-date-header", "--no-proxy-headers",
        "--no-access-log", "--no-use-colors", "--ws-per-message-deflate", "false",
        "--header", "x-a:1", "--header", "x-b: 2"]
    import logging
    import ssl

    assert serve_args(log_level=logging.DEBUG, reload_dirs=["a", "b"], reload_excludes="*.tmp",
                      forwarded_allow_ips=["10.0.0.1", "10.0.0.2"], ssl_cert_reqs=ssl.CERT_REQUIRED) == [
        "serve", "--log-level", "debug", "--reload-dir", "a", "--reload-dir", "b", "--reload-exclude", "*.tmp",
        "--forwarded-allow-ips", "10.0.0.1,10.0.0.2", "--ssl-cert-reqs", "2"]


def test_uringapi_run_takes_uvicorn_runs_keywords(tmp_path: Path) -> None:
    """The keywords a `uvicorn.run(...)` call carries, moved over unchanged: switches turned
    off, `headers` as pairs, and `log_config` as a dictConfig dict (the workers read it)."""
    port = free_port()
    log_file = tmp_path / "app.log"
    config = {"version": 1, "disable_existing_loggers": False,
              "formatters": {"plain": {"format": "from-dict %(name)s %(message)s"}},
              "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log_file),
                                    "formatter": "plain"}},
              "loggers": {"env_app": {"handlers": ["file"], "level": "INFO"}}}
    code = ("import uringapi; uringapi.run('env_app:app', app_dir=%r, host=%r, port=%d, workers=1, "
            "server_header=False, date_header=False, headers=[('x-run', 'pairs')], log_config=%r)"
            % (str(APPS_DIR), HOST, port, config))
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = start([sys.executable, "-c", code], {"TMPDIR": str(temp)})
    try:
        status, headers, _ = wait_answer(proc, port)
        assert (status, headers.get("x-run")) == (200, "pairs")
        assert [p.suffix for p in temp.iterdir()] == [".json"]  # the dict, as the workers read it
        assert "server" not in headers and "date" not in headers, headers
        get(port, "/logged")
    finally:
        assert stop(proc) == 0
    assert "from-dict env_app served /logged" in log_file.read_text()
    assert not list(temp.iterdir())  # removed when run() returned

def test_log_config_is_applied_in_the_workers(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "custom %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "plain"}},
        "loggers": {"env_app": {"handlers": ["file"], "level": "INFO"}},
    }))
    port = free_port()
    proc = start(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--port", str(port),
                           "--workers", "1", "--log-config", str(config)))
    try:
        wait_answer(proc, port)
        get(port, "/logged")
    finally:
        assert stop(proc) == 0
    assert "custom env_app served /logged" in log_file.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = subprocess.run(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--port", str(free_port()),
                                   "--workers", "1", "--log-config", str(bad)),
                         env=server_env(), capture_output=True, text=True, timeout=EXIT_TIMEOUT)
    assert out.returncode != 0 and "error: --log-config" in out.stderr, out.stderr


def test_sd_notify_ready_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(READY_TIMEOUT)
    port = free_port()
    proc = start(serve_cmd("env_app:app", "--app-dir", str(APPS_DIR), "--port", str(port), "--workers", "1"),
                 {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    try:
        seen = set()
        while "READY=1" not in seen:
            seen.add(sink.recv(4096).decode())
        # Ready means serving: the first request after READY=1 is answered.
        assert get(port)[0] == 200
        while "WATCHDOG=1" not in seen:
            seen.add(sink.recv(4096).decode())
        os.killpg(proc.pid, signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.add(sink.recv(4096).decode())
    finally:
        assert stop(proc) == 0
        sink.close()


def test_the_demo_app_keeps_fast_fast_while_block_blocks_a_worker() -> None:
    """`make demo`'s app: /fast is answered while /block holds one worker's loop. Asserted by
    order (the /fast answer arrives before /block's), not by time."""
    import threading

    port = free_port()
    proc = start(serve_cmd("uringapi.demo_fastapi:app", "--port", str(port), "--workers", "2"))
    try:
        wait_answer(proc, port)
        done: list[str] = []
        blocker = threading.Thread(target=lambda: (get(port, "/block?seconds=3"), done.append("block")))
        blocker.start()
        time.sleep(0.5)  # let /block reach a worker and stall it (--stall-timeout is 0.1 s)
        status, _, body = get(port, "/fast")
        done.append("fast")
        blocker.join(timeout=EXIT_TIMEOUT)
        assert status == 200 and b'"fast":true' in body
        assert done == ["fast", "block"], done
    finally:
        assert stop(proc) == 0


def test_the_demo_app_echoes_websocket_messages() -> None:
    """`make demo`'s `/ws` route: text and bytes come back as sent, and a client close ends it."""
    from websockets.sync.client import connect

    port = free_port()
    proc = start(serve_cmd("uringapi.demo_fastapi:app", "--port", str(port), "--workers", "2"))
    try:
        wait_answer(proc, port)
        with connect(f"ws://{HOST}:{port}/ws", open_timeout=EXIT_TIMEOUT) as ws:
            ws.send("hello")
            assert ws.recv(timeout=EXIT_TIMEOUT) == "hello"
            ws.send(b"\x00\xff" * 1000)
            assert ws.recv(timeout=EXIT_TIMEOUT) == b"\x00\xff" * 1000
    finally:
        assert stop(proc) == 0


RELOAD_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%s"})
'''


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_serves_an_edited_app_without_closing_the_listener(tmp_path: Path, workers: int) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(RELOAD_APP % "v1")
    port = free_port()
    proc = start(serve_cmd("reload_app:app", "--app-dir", str(tmp_path), "--port", str(port),
                           "--workers", str(workers), "--reload"))
    try:
        assert wait_answer(proc, port)[2] == b"v1"
        module.write_text(RELOAD_APP % "v2")
        # The bound: the edit is served within 5 s. Every request in between is
        # answered (the listener never closes; old workers serve until new ones are ready).
        deadline = time.monotonic() + 5.0
        seen = []
        while time.monotonic() < deadline:
            status, _, body = get(port)
            assert status == 200
            seen.append(body)
            if body == b"v2":
                break
            time.sleep(0.05)
        assert seen[-1] == b"v2", f"still {seen[-1]!r} after 5 s"
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0
        err = proc.stderr.read() if proc.stderr else b""
    assert b"reload_app.py changed; restarting the workers" in err, err.decode()[-2000:]


def test_reload_ignores_installed_packages_and_hidden_directories(tmp_path: Path) -> None:
    """A `pip install` into the project's own .venv rewrote hundreds of .py files below the
    watched directory, and each burst restarted the workers: only the file name was checked
    against `.*`. Files in hidden directories, __pycache__, node_modules and site-packages
    now count for nothing; an edit of the app still restarts."""
    module = tmp_path / "reload_app.py"
    module.write_text(RELOAD_APP % "v1")
    port = free_port()
    proc = start(serve_cmd("reload_app:app", "--app-dir", str(tmp_path), "--port", str(port),
                           "--reload"))
    try:
        assert wait_answer(proc, port)[2] == b"v1"
        for rel in (".venv/lib/python3.11/site-packages/pkg/mod.py", "venv/lib/site-packages/m.py",
                    "node_modules/tool/gen.py", "pkg/__pycache__/x.py", ".git/hooks/h.py"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("X = 1\n")
        time.sleep(1.0)  # past the watcher's 200 ms settle time
        module.write_text(RELOAD_APP % "v2")
        deadline = time.monotonic() + 5.0
        while get(port)[2] != b"v2":
            assert time.monotonic() < deadline, "the edit was not served within 5 s"
            time.sleep(0.05)
    finally:
        assert stop(proc) == 0
        err = (proc.stderr.read() if proc.stderr else b"").decode()
    restarts = [line for line in err.splitlines() if "changed; restarting the workers" in line]
    assert len(restarts) == 1 and "reload_app.py" in restarts[0], err[-3000:]
