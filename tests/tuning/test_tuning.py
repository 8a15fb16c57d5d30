"""Tests for the bare-metal tuning scripts in tuning/.

Every script is run for real against this machine in --check and --dry-run mode,
and the machine is compared before and after: neither mode may change anything.
--apply is only ever run as an unprivileged user (setpriv/runuser), where it must
refuse with error:/hint: and exit 2. These tests never run --apply as root.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUNING = ROOT / "tuning"
SCRIPTS = ["sysctl.sh", "limits.sh", "affinity.sh", "check.sh"]
NOBODY = 65534

# (key, recommended value as the scripts print it)
SYSCTLS = [
    ("net.core.somaxconn", ">= 65535"),
    ("net.ipv4.tcp_max_syn_backlog", ">= 65535"),
    ("net.core.netdev_max_backlog", ">= 16384"),
    ("net.ipv4.ip_local_port_range", "10240 65535"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.tcp_fin_timeout", "<= 15"),
    ("fs.file-max", ">= 2097152"),
    ("net.ipv4.tcp_migrate_req", "1"),
    ("vm.overcommit_memory", "1"),
]

# What each script's --check must show: the recommended values.
CHECK_EXPECTS = {
    "sysctl.sh": [k for k, _ in SYSCTLS] + [v for _, v in SYSCTLS] + ["/etc/sysctl.d/90-uringapi.conf"],
    "limits.sh": ["nofile", "memlock", "1048576", "unlimited", "/etc/security/limits.d/90-uringapi.conf",
                  "LimitNOFILE=1048576", "LimitMEMLOCK=infinity"],
    "affinity.sh": ["CPU placement", "online CPUs", "NIC interrupts"],
    "check.sh": ["== io_uring ==", "== sysctl", "== limits", "== CPU placement", "summary:"]
    + [k for k, _ in SYSCTLS],
}

# Commands a --dry-run may print (the first word of every non-comment line).
DRY_RUN_COMMANDS = {"sysctl", "mkdir", "cat", "prlimit", "taskset", "echo"}


# ---- helpers ---------------------------------------------------------------------


def run(script: str, *args: str, env: dict[str, str] | None = None,
        wrapper: list[str] | None = None, scripts: Path = TUNING) -> subprocess.CompletedProcess[str]:
    wrapper = wrapper or []
    if "--apply" in args:
        assert runs_unprivileged(wrapper), "--apply is only ever run as an unprivileged user"
    full_env = {**os.environ, **(env or {})}
    cmd = [*wrapper, "bash", str(scripts / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120, check=False)


def runs_unprivileged(wrapper: list[str]) -> bool:
    if not wrapper:
        return os.geteuid() != 0
    if wrapper[0] == "setpriv":
        return f"--reuid={NOBODY}" in wrapper
    return wrapper[:3] == ["runuser", "-u", "nobody"]


def read_sysctl(key: str) -> str | None:
    try:
        return " ".join(Path("/proc/sys", key.replace(".", "/")).read_text().split())
    except OSError:
        return None


def snapshot() -> dict[str, object]:
    """Everything the scripts could change, as far as it can be read."""
    snap: dict[str, object] = {}
    for key in [k for k, _ in SYSCTLS] + ["fs.nr_open", "kernel.io_uring_disabled"]:
        snap[key] = read_sysctl(key)
    for d in ("/etc/sysctl.d", "/etc/security/limits.d", "/etc/systemd/system/uringapi.service.d"):
        p = Path(d)
        snap[d] = sorted((f.name, f.stat().st_mtime_ns) for f in p.iterdir()) if p.is_dir() else None
    for f in glob.glob("/proc/irq/*/smp_affinity_list"):
        try:
            snap[f] = Path(f).read_text().strip()
        except OSError:
            pass
    for f in glob.glob("/sys/class/net/*/queues/rx-*/rps_cpus"):
        try:
            snap[f] = Path(f).read_text().strip()
        except OSError:
            pass
    snap["rlimits"] = (resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_MEMLOCK))
    snap["affinity"] = sorted(os.sched_getaffinity(0))
    return snap


def assert_dry_run_is_commands(out: str) -> None:
    """Prose is '#' comments; every other line is a command we allow, or heredoc body."""
    heredoc_end = None
    for line in out.splitlines():
        if heredoc_end is not None:
            if line == heredoc_end:
                heredoc_end = None
            continue
        if not line.strip() or line.startswith("#"):
            continue
        word = line.split()[0]
        assert word in DRY_RUN_COMMANDS, f"unexpected command in --dry-run output: {line!r}"
        m = re.search(r"<<'(\w+)'$", line)
        if m:
            heredoc_end = m.group(1)
    assert heredoc_end is None, "unterminated heredoc"
    syntax = subprocess.run(["bash", "-n"], input=out, text=True, capture_output=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


def online_cpus() -> list[int]:
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def io_uring_probe() -> str:
    """Our own io_uring_setup probe, to compare with what check.sh reports."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(ctypes.c_long(425), ctypes.c_uint(8), params)
    if fd >= 0:
        os.close(fd)
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "errno")


def unprivileged_wrapper() -> list[str]:
    if os.geteuid() != 0:
        return []  # already unprivileged
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("running as root and neither setpriv nor runuser is available")


@pytest.fixture(scope="module")
def public_scripts():
    """A copy of tuning/ that the unprivileged user can surely read."""
    d = Path(tempfile.mkdtemp(prefix="uringapi-tuning-"))
    try:
        for f in TUNING.glob("*.sh"):
            shutil.copy(f, d / f.name)
            (d / f.name).chmod(0o755)
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_proc_sys(tmp_path):
    """A /proc/sys stand-in (URINGAPI_PROC_SYS) with only the keys a test writes."""
    def make(values: dict[str, str]) -> dict[str, str]:
        for key, value in values.items():
            p = tmp_path / key.replace(".", "/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(value + "\n")
        return {"URINGAPI_PROC_SYS": str(tmp_path)}
    return make


FAKE_FRONT_END = r"""
import ctypes, subprocess, sys, threading
libc = ctypes.CDLL(None)
ready = threading.Barrier(4)
tids = {}
def io(n):
    libc.prctl(15, f"uringapi-io-{n}".encode(), 0, 0, 0)   # PR_SET_NAME
    tids[n] = threading.get_native_id()
    ready.wait()
    threading.Event().wait()
for n in range(3):
    threading.Thread(target=io, args=(n,), daemon=True).start()
ready.wait()
kids = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
print(" ".join(str(tids[n]) for n in range(3)), " ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.kill()
"""


@pytest.fixture
def fake_front_end():
    """A process shaped like the uringapi front end: threads uringapi-io-0..2 and two
    child processes. Yields (pid, [io tids], [worker pids])."""
    proc = subprocess.Popen([sys.executable, "-c", FAKE_FRONT_END], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 5, "fake front end did not start"
        yield proc.pid, [int(t) for t in line[:3]], [int(p) for p in line[3:]]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- every script ------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_strict_bash(script):
    text = (TUNING / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    r = run(script, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")
    for flag in ("--check", "--dry-run", "--apply", "--help"):
        assert flag in r.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_check_reports_recommended_values_and_changes_nothing(script):
    before = snapshot()
    r = run(script, "--check")
    assert r.returncode == 0, r.stderr
    for expected in CHECK_EXPECTS[script]:
        assert expected in r.stdout, f"{expected!r} missing from {script} --check"
    assert snapshot() == before


@pytest.mark.parametrize("script", ["sysctl.sh", "limits.sh"])
def test_check_is_the_default_mode(script):
    assert run(script).stdout == run(script, "--check").stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_commands_and_changes_nothing(script):
    before = snapshot()
    r = run(script, "--dry-run")
    after = snapshot()
    assert r.returncode == 0, r.stderr
    assert after == before, "--dry-run changed the machine"
    assert "--dry-run: nothing is changed" in r.stdout
    assert_dry_run_is_commands(r.stdout)


def test_sysctl_dry_run_shows_commands_and_the_persistent_file():
    r = run("sysctl.sh", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "cat > /etc/sysctl.d/90-uringapi.conf <<'EOF'" in out
    body = out.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    for key, recommended in SYSCTLS:
        assert f"recommended {recommended}" in out
        assert re.search(rf"^-?{re.escape(key)} = \S", body, re.M), f"{key} missing from the file"
        current = read_sysctl(key)
        if current is None:
            assert f"{key}: not available on this kernel; skipped" in out
        elif f"{key}: {current} ->" in out:
            assert re.search(rf"^sysctl -q -w '?{re.escape(key)}=", out, re.M)
    # A key newer than 4.x is written so that older kernels skip it quietly.
    assert "-net.ipv4.tcp_migrate_req = 1" in body


def test_limits_dry_run_raises_the_shell_and_writes_limits_d():
    r = run("limits.sh", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "cat > /etc/security/limits.d/90-uringapi.conf <<'EOF'" in r.stdout
    body = r.stdout.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    for line in ("soft nofile  1048576", "hard nofile  1048576", "soft memlock unlimited", "hard memlock unlimited"):
        assert re.search(rf"^\*\s+{line}$", body, re.M)
        assert re.search(rf"^root\s+{line}$", body, re.M)  # pam_limits' '*' skips root
    # the running "shell" here is this pytest process: prlimit it, or say why not
    assert f"prlimit --pid {os.getpid()} " in r.stdout or "nothing to raise" in r.stdout
    assert "LimitNOFILE=1048576" in r.stdout


def test_limits_user_option_narrows_limits_d():
    r = run("limits.sh", "--dry-run", "--user", "www-data")
    assert r.returncode == 0, r.stderr
    body = r.stdout.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    assert re.search(r"^www-data\s+hard nofile", body, re.M)
    assert not re.search(r"^\*\s", body, re.M)


def test_check_dry_run_runs_the_scripts_in_order():
    r = run("check.sh", "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    positions = [out.index(f"# {s} --dry-run") for s in ("sysctl.sh", "limits.sh", "affinity.sh")]
    assert positions == sorted(positions)


# ---- usage errors and refusing --apply ------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_option_is_a_usage_error(script):
    r = run(script, "--frobnicate")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("error: unknown option '--frobnicate'\nhint: ")


@pytest.mark.parametrize("script", SCRIPTS)
def test_two_modes_are_a_usage_error(script):
    r = run(script, "--check", "--dry-run")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "\nhint: " in r.stderr


@pytest.mark.parametrize("args", [["limits.sh", "--pid"], ["affinity.sh", "--pid", "not-a-pid"],
                                  ["affinity.sh", "--io-cores", "0-x"], ["affinity.sh", "--io-cores", "99999"],
                                  ["affinity.sh", "--nic", "lo"], ["check.sh", "stray"]])
def test_bad_option_values_are_usage_errors(args):
    r = run(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "\nhint: " in r.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_apply_as_non_root_refuses(script, public_scripts):
    wrapper = unprivileged_wrapper()
    before = snapshot()
    r = run(script, "--apply", wrapper=wrapper, scripts=public_scripts)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: --apply changes system settings and needs root")
    assert "\nhint: " in r.stderr and "--dry-run" in r.stderr
    assert r.stdout == ""
    assert snapshot() == before


@pytest.mark.parametrize("script", ["sysctl.sh", "check.sh"])
def test_check_and_dry_run_work_unprivileged(script, public_scripts):
    wrapper = unprivileged_wrapper()
    for mode in ("--check", "--dry-run"):
        r = run(script, mode, wrapper=wrapper, scripts=public_scripts)
        assert r.returncode == 0, r.stderr
        assert "net.core.somaxconn" in r.stdout


# ---- sysctl keys this kernel lacks ------------------------------------------------------


def test_missing_sysctl_keys_are_reported_not_fatal(fake_proc_sys):
    env = fake_proc_sys({"net.core.somaxconn": "128", "net.ipv4.ip_local_port_range": "32768\t60999",
                         "fs.file-max": "9223372036854775807"})
    r = run("sysctl.sh", "--check", env=env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith(("net.", "fs.", "vm."))}
    assert "change" in rows["net.core.somaxconn"]
    assert "32768 60999" in rows["net.ipv4.ip_local_port_range"]  # tab squeezed
    assert re.search(r"\bok\b", rows["fs.file-max"])  # a larger value is fine
    for key in ("net.ipv4.tcp_migrate_req", "vm.overcommit_memory", "net.ipv4.tcp_fin_timeout"):
        assert "not available" in rows[key]
    assert "Linux 5.14+" in rows["net.ipv4.tcp_migrate_req"]

    r = run("sysctl.sh", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert "sysctl -q -w net.core.somaxconn=65535" in r.stdout
    assert "net.ipv4.tcp_migrate_req: not available on this kernel; skipped" in r.stdout
    assert "-vm.overcommit_memory = 1" in r.stdout  # skipped quietly at boot on this kernel
    assert "fs.file-max = 9223372036854775807" in r.stdout  # never lowered
    assert "sysctl -q -w fs.file-max" not in r.stdout
    assert_dry_run_is_commands(r.stdout)


def test_strict_fails_when_something_is_off(fake_proc_sys):
    env = fake_proc_sys({"net.core.somaxconn": "128"})
    assert run("sysctl.sh", "--check", env=env).returncode == 0
    r = run("sysctl.sh", "--check", "--strict", env=env)
    assert r.returncode == 1
    assert "change" in r.stdout


def test_port_range_narrower_than_recommended_is_widened(fake_proc_sys):
    env = fake_proc_sys({"net.ipv4.ip_local_port_range": "1024 60999"})
    r = run("sysctl.sh", "--dry-run", env=env)
    # keeps the lower start the admin chose, extends the end
    assert "sysctl -q -w 'net.ipv4.ip_local_port_range=1024 65535'" in r.stdout


# ---- io_uring status -----------------------------------------------------------------


def test_check_reports_io_uring_status():
    r = run("check.sh", "--check")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for row in ("kernel", "io_uring_disabled", "seccomp", "memlock", "probe"):
        assert re.search(rf"^{row}\s", out, re.M), f"no {row} row"
    assert os.uname().release in out
    verdict = re.search(r"^io_uring: (usable|NOT usable|probably usable)", out, re.M)
    assert verdict, out
    if shutil.which("python3") and os.uname().machine in ("x86_64", "aarch64"):
        expected = io_uring_probe()
        if expected == "ok":
            assert "io_uring_setup: ok" in out
            if read_sysctl("kernel.io_uring_disabled") in (None, "0"):
                assert verdict.group(1) == "usable"
        else:
            assert f"io_uring_setup: {expected}" in out
            assert verdict.group(1) == "NOT usable"


@pytest.mark.parametrize("value,expected", [("2", "io_uring switched off for every process"),
                                            ("1", "restricted to group")])
def test_check_reports_io_uring_disabled(fake_proc_sys, value, expected):
    env = fake_proc_sys({"kernel.io_uring_disabled": value, "kernel.io_uring_group": "-1",
                         "net.core.somaxconn": "4096"})
    r = run("check.sh", "--check", env=env)
    assert r.returncode == 0, r.stderr
    assert expected in r.stdout
    if value == "2":
        assert "io_uring: NOT usable: kernel.io_uring_disabled=2" in r.stdout
        assert run("check.sh", "--check", "--strict", env=env).returncode == 1


def test_check_without_io_uring_switch_says_so(fake_proc_sys):
    r = run("check.sh", "--check", env=fake_proc_sys({"net.core.somaxconn": "4096"}))
    assert re.search(r"^io_uring_disabled\s+not available", r.stdout, re.M)


def test_check_reports_seccomp_of_its_own_process():
    status = Path("/proc/self/status").read_text()
    mode = re.search(r"^Seccomp:\s+(\d)", status, re.M)
    r = run("check.sh", "--check")
    if mode:
        assert re.search(rf"^seccomp\s+{mode.group(1)} ", r.stdout, re.M)


# ---- affinity against a process shaped like the front end --------------------------------------


def test_affinity_check_and_dry_run_pin_threads_and_workers(fake_front_end):
    pid, tids, workers = fake_front_end
    cpus = online_cpus()
    before = {t: os.sched_getaffinity(t) for t in tids + workers}

    r = run("affinity.sh", "--check", "--pid", str(pid), "--no-irqs")
    assert r.returncode == 0, r.stderr
    for n, tid in enumerate(tids):
        assert re.search(rf"^uringapi-io-{n} \(thread\)\s+{tid}\s+\S+\s+{cpus[n % len(cpus)]}\s", r.stdout, re.M)
    reverse = cpus[::-1]
    for j, wpid in enumerate(workers):
        assert re.search(rf"^worker sleep\s+{wpid}\s+\S+\s+{reverse[j % len(cpus)]}\s", r.stdout, re.M)

    r = run("affinity.sh", "--dry-run", "--pid", str(pid), "--no-irqs")
    assert r.returncode == 0, r.stderr
    assert_dry_run_is_commands(r.stdout)
    for n, tid in enumerate(tids):
        want = cpus[n % len(cpus)]
        if before[tid] != {want}:
            assert f"taskset -p -c {want} {tid}\n" in r.stdout
    for j, wpid in enumerate(workers):
        want = reverse[j % len(cpus)]
        if before[wpid] != {want}:
            assert f"taskset -a -p -c {want} {wpid}\n" in r.stdout
    assert {t: os.sched_getaffinity(t) for t in tids + workers} == before


def test_affinity_core_lists_are_honoured(fake_front_end):
    pid, tids, workers = fake_front_end
    cpu = online_cpus()[-1]
    r = run("affinity.sh", "--check", "--pid", str(pid), "--io-cores", str(cpu), "--worker-cores", str(cpu))
    assert r.returncode == 0, r.stderr
    for tid in tids + workers:
        assert re.search(rf"\s{tid}\s+\S+\s+{cpu}\s", r.stdout)


def test_limits_check_of_a_front_end_covers_its_workers(fake_front_end):
    pid, _, workers = fake_front_end
    r = run("limits.sh", "--check", "--pid", str(pid))
    assert r.returncode == 0, r.stderr
    for p in [pid, *workers]:
        assert re.search(rf"^{p} \(\S+\)\s+nofile", r.stdout, re.M)


def test_affinity_lists_nic_interrupts():
    nics = [p.parent.name for p in Path("/sys/class/net").glob("*/device")]
    r = run("affinity.sh", "--check")
    assert r.returncode == 0, r.stderr
    if not nics:
        assert "no physical network interfaces" in r.stdout
    for nic in nics:
        assert re.search(rf"^{re.escape(nic)}: driver ", r.stdout, re.M)


# ---- lint -------------------------------------------------------------------------------


def test_shellcheck_clean():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    files = [str(TUNING / s) for s in [*SCRIPTS, "lib.sh"]]
    r = subprocess.run(["shellcheck", "-x", *files], capture_output=True, text=True, cwd=TUNING, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_scripts_are_executable():
    for s in SCRIPTS:
        assert os.stat(TUNING / s).st_mode & stat.S_IXUSR, f"{s} is not executable"
