"""Tests for the deployment files in tuning/deploy/.

- Each file is well-formed: the seccomp profile is JSON with the rules the README states;
  kubernetes.yaml parses (skipped, with the reason, when PyYAML is not installed) and its
  probes, ports and grace period agree with the server's flags; uringapi.service passes
  `systemd-analyze verify` (skipped when systemd-analyze is missing) and its stop timeout
  is above the graceful shutdown timeout.
- Every `--flag` the files name exists in `uringapi serve --help`. A missing flag fails the
  test with the list of them, per file.
- The seccomp profile is loaded for real (through libseccomp, as container runtimes do) in
  front of the real server and its Python workers: with it, the server serves on io_uring;
  with the same profile minus the three io_uring calls (what RuntimeDefault does), it
  serves on epoll after one warning; and a process under it cannot create a namespace.

Run: .venv/bin/pytest tests/tuning/test_deploy.py
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "tuning" / "deploy"
SERVICE = DEPLOY / "uringapi.service"
KUBERNETES = DEPLOY / "kubernetes.yaml"
PROFILE = DEPLOY / "seccomp-io_uring.json"
README = DEPLOY / "README.md"
APPS = ROOT / "tests" / "apps"
URINGAPI_BIN = Path(os.environ.get("URINGAPI_BIN") or ROOT / ".venv" / "bin" / "uringapi")

IO_URING = ("io_uring_setup", "io_uring_enter", "io_uring_register")

# Flags in the deployment files that belong to other commands, not `uringapi serve`.
FOREIGN_FLAGS = {
    "kill-whom": "systemctl kill",
    "signal": "systemctl kill",
    "now": "systemctl enable",
    "system": "useradd",
    "home": "useradd",
    "shell": "useradd",
    "security-opt": "docker run",
}

# Hang guards, not speed assertions.
LISTEN_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


# ---- the seccomp profile ------------------------------------------------------------


def load_profile() -> dict:
    return json.loads(PROFILE.read_text())


def unconditional_allows(profile: dict) -> set[str]:
    return {n for r in profile["syscalls"]
            if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


def test_seccomp_profile_is_json_with_the_documented_rules():
    p = load_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p.get("defaultErrnoRet") == 1
    assert "SCMP_ARCH_X86_64" in p["architectures"] and "SCMP_ARCH_AARCH64" in p["architectures"]
    allowed = unconditional_allows(p)
    assert set(IO_URING) <= allowed
    # What uringapi itself needs: memfd segments, eventfd doorbells, pidfds, epoll fallback,
    # CPU pinning, limits.
    for name in ("memfd_create", "eventfd2", "pidfd_open", "epoll_pwait", "epoll_ctl", "mmap",
                 "fcntl", "sched_setaffinity", "prlimit64", "accept4", "setsockopt", "writev"):
        assert name in allowed, name
    # What RuntimeDefault denies to an unprivileged container must stay denied.
    for name in ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf",
                 "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
                 "init_module", "finit_module", "kexec_load", "reboot", "swapon",
                 "open_by_handle_at", "clock_settime", "settimeofday", "fsopen", "move_mount",
                 "syslog", "acct", "iopl", "ioperm", "pidfd_getfd", "kcmp"):
        assert name not in allowed, name
    rules = {}
    for r in p["syscalls"]:
        for n in r["names"]:
            rules.setdefault(n, []).append(r)
    # clone only without namespace flags; clone3 -> ENOSYS so that glibc falls back to clone.
    [clone] = rules["clone"]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    [clone3] = rules["clone3"]
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38
    assert all(r.get("args") for r in rules["personality"])
    for name, rs in rules.items():
        assert len(rs) == 1 or name == "personality", f"{name} is listed twice"


# ---- kubernetes.yaml ----------------------------------------------------------------


def arg_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from the container args"
    return args[args.index(flag) + 1]


def test_kubernetes_manifest_parses_and_agrees_with_the_flags():
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not installed (it comes with uvicorn[standard] in tests/requirements.txt)")
    docs = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    args = [str(a) for a in c["args"]]
    assert c["command"] == ["uringapi"] and args[0] == "serve"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(arg_value(args, "--port"))
    assert ports["metrics"] == int(arg_value(args, "--metrics-port"))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    graceful = float(arg_value(args, "--timeout-graceful-shutdown"))
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > graceful + pre_stop
    seccomp = pod["securityContext"]["seccompProfile"]
    assert seccomp["type"] == "Localhost"
    assert seccomp["localhostProfile"].endswith("/" + PROFILE.name)
    res = c["resources"]
    assert res["requests"] == res["limits"], "Guaranteed QoS, as the README says"
    service = kinds["Service"]
    assert service["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


# ---- uringapi.service ---------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    """Key -> values of the [Service] section, continuation lines joined."""
    settings: dict[str, list[str]] = {}
    section = None
    text = SERVICE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_has_the_documented_settings():
    s = unit_settings()
    exec_start = s["ExecStart"][0].split()
    assert exec_start[1:3] == ["serve", "app:app"]
    # uringapi sends READY=1 / STOPPING=1 / WATCHDOG=1 (tests/e2e/test_cli_ecosystem.py).
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert float(s["WatchdogSec"][0]) > 0
    assert s["ExecReload"] == ["/bin/kill -s HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"] and s["KillMode"] == ["mixed"]
    graceful = float(arg_value(exec_start, "--timeout-graceful-shutdown"))
    assert float(s["TimeoutStopSec"][0]) > graceful
    assert s["LimitNOFILE"] == ["1048576"] and s["LimitMEMLOCK"] == ["infinity"]
    syscalls = s["SystemCallFilter"][0].split()
    assert "@system-service" in syscalls and set(IO_URING) <= set(syscalls)
    assert s["SystemCallErrorNumber"] == ["EPERM"], "a blocked call must fail, not kill"
    assert "MemoryDenyWriteExecute" not in s


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    if not URINGAPI_BIN.exists():
        pytest.skip(f"{URINGAPI_BIN} is not built (make setup)")
    # verify checks that ExecStart's binary exists: point it at the one built here.
    text = SERVICE.read_text()
    assert "/srv/myapp/.venv/bin/uringapi" in text
    unit = tmp_path / SERVICE.name
    unit.write_text(text.replace("/srv/myapp/.venv/bin/uringapi", str(URINGAPI_BIN)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 even for unknown keys and bad values; it only prints them.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


# ---- flags --------------------------------------------------------------------------


def serve_flags() -> set[str]:
    if not URINGAPI_BIN.exists():
        pytest.skip(f"{URINGAPI_BIN} is not built (make setup)")
    r = subprocess.run([str(URINGAPI_BIN), "serve", "--help"], capture_output=True, text=True,
                       timeout=60, check=True)
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", r.stdout))


def named_flags(path: Path) -> set[str]:
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)", path.read_text()))


def test_the_flag_pattern_finds_flags():
    assert {"workers", "timeout-graceful-shutdown", "io-driver"} <= named_flags(SERVICE) | named_flags(README)


def test_every_flag_named_exists_in_serve_help():
    known = serve_flags()
    missing = {}
    for f in (SERVICE, KUBERNETES, README):
        absent = sorted(named_flags(f) - known - set(FOREIGN_FLAGS))
        if absent:
            missing[f.name] = absent
    assert not missing, (
        "flags named in tuning/deploy that `uringapi serve --help` does not know:\n"
        + "\n".join(f"  {name}: {', '.join('--' + a for a in flags)}" for name, flags in missing.items()))


# ---- the profile, applied for real --------------------------------------------------


def libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


SCMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def scmp_action(name: str, errno_ret: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return 0x7FFF0000
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno_ret & 0xFFFF)
    raise ValueError(f"action {name} not handled")


def install_profile(profile: dict, drop: set[str]) -> None:
    """Loads the profile into this process the way runc does: every rule through
    libseccomp for the native architecture, names it does not know skipped."""
    lib = libseccomp()
    assert lib is not None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_action(profile["defaultAction"], profile.get("defaultErrnoRet", 1)))
    if not ctx:
        raise OSError("seccomp_init failed")
    for rule in profile["syscalls"]:
        action = scmp_action(rule["action"], rule.get("errnoRet", 1))
        args = rule.get("args", [])
        cmps = (ArgCmp * max(1, len(args)))(*[
            ArgCmp(a["index"], SCMP_OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args])
        for name in rule["names"]:
            if name in drop:
                continue
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # not a call of this architecture
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), cmps)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({name})")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, "seccomp_load")


def under_profile(drop: tuple[str, ...], cmd: list[str]) -> list[str]:
    """A command that runs `cmd` under the profile (this file, run as a script, installs
    it and then execs `cmd`)."""
    return [sys.executable, __file__, "--under-seccomp", ",".join(drop), "--", *cmd]


def need_seccomp() -> None:
    if libseccomp() is None:
        pytest.skip("libseccomp is not installed (package libseccomp2)")
    if not URINGAPI_BIN.exists():
        pytest.skip(f"{URINGAPI_BIN} is not built (make setup)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def serve_under_profile(tmp_path: Path, drop: tuple[str, ...]) -> tuple[bytes, str]:
    """Starts the server and its workers under the profile, sends one request, stops it.
    Returns the response and the server's stderr."""
    port = free_port()
    cmd = under_profile(drop, [str(URINGAPI_BIN), "serve", "starlette_app:app", "--app-dir", str(APPS),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
    log = tmp_path / f"stderr-{port}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            assert proc.poll() is None, f"server exited:\n{log.read_text(errors='replace')}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"never listened:\n{log.read_text(errors='replace')}"
                time.sleep(0.1)
        # The seccomp filter is on the server and inherited by the workers.
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), status
        response = get(port, "/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return response, log.read_text(errors="replace")


def test_server_keeps_io_uring_under_the_profile(tmp_path):
    need_seccomp()
    response, stderr = serve_under_profile(tmp_path, drop=())
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert "io driver: io_uring" in stderr, stderr
    assert "falling back to epoll" not in stderr


def test_without_the_io_uring_calls_the_server_falls_back_to_epoll(tmp_path):
    need_seccomp()
    response, stderr = serve_under_profile(tmp_path, drop=IO_URING)
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert "io driver: epoll" in stderr, stderr
    warnings = [line for line in stderr.splitlines() if "falling back to epoll" in line]
    assert len(warnings) == 1 and "EPERM" in warnings[0], stderr


PROBE = """
import ctypes, os, re, threading
libc = ctypes.CDLL(None, use_errno=True)
seccomp = re.search(r"^Seccomp:\\s+(\\d+)", open("/proc/self/status").read(), re.M).group(1)
rc = libc.unshare(0x10000000)  # CLONE_NEWUSER
unshare = "ok" if rc == 0 else os.strerror(ctypes.get_errno())
pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(f"seccomp={seccomp} unshare={unshare} fork={os.waitstatus_to_exitcode(status)} thread=ok")
"""


def test_the_profile_forbids_namespaces_but_not_fork_or_threads():
    need_seccomp()
    r = subprocess.run(under_profile((), [sys.executable, "-c", PROBE]), capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "seccomp=2 unshare=Operation not permitted fork=7 thread=ok", r.stdout


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--under-seccomp":
    # python test_deploy.py --under-seccomp DROP -- CMD...: install the profile minus the
    # comma-separated calls in DROP, then exec CMD.
    dropped = {n for n in sys.argv[2].split(",") if n}
    command = sys.argv[sys.argv.index("--") + 1:]
    install_profile(load_profile(), dropped)
    os.execv(command[0], command)
