"""What the results were measured on: hardware, kernel, toolchain, versions."""

from __future__ import annotations

import gzip
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from . import paths

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = ("fastapi", "starlette", "pydantic", "uvloop", "httptools", "matplotlib")


def describe(wrk: str | None, rustc: str | None) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "wrk": _first_line([wrk, "-v"]) if wrk else None,
        "rustc": _first_line([rustc, "--version"]) if rustc else None,
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git_commit(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }


def _cpu_model() -> str | None:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def _memory_gib() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _os_release() -> str | None:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `wrk -v` prints its version and exits 1, so the exit code is not checked.
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _git_commit() -> str | None:
    """HEAD, with "-dirty" when tracked files differ from it (the run measured code no
    commit holds)."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return head + "-dirty" if changed else head


def _git(*args: str) -> str | None:
    cmd = ["git", "-C", str(paths.REPO), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_times() -> list[int]:
    """The aggregate line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    return parse_cpu_line(_read("/proc/stat") or "cpu 0 0 0 0 0 0 0 0")


def parse_cpu_line(proc_stat: str) -> list[int]:
    """The aggregate `cpu` line of a /proc/stat text, in clock ticks."""
    first = proc_stat.splitlines()[0]
    return [int(v) for v in first.split()[1:]]


def irq_time_accounting() -> bool:
    """Whether the kernel accounts interrupt time apart from the interrupted task
    (CONFIG_IRQ_TIME_ACCOUNTING). Off (the common default, and this machine's), a tick
    that lands in softirq context is charged both to /proc/stat's softirq column and
    to the running task's stime; on, only to the softirq column. Unknown counts as off."""
    config = _read(f"/boot/config-{platform.release()}")
    if config is None:
        try:
            with gzip.open("/proc/config.gz", "rt") as f:
                config = f.read()
        except OSError:
            return False
    return "CONFIG_IRQ_TIME_ACCOUNTING=y" in config.splitlines()


IRQ_TIME_ACCOUNTING = irq_time_accounting()


def cpu_usage(before: list[int], after: list[int]) -> dict[str, float]:
    """CPU seconds of the whole machine in a window: busy (not idle), the part
    spent in softirq (loopback TCP lives there), and the part stolen by the
    hypervisor. Compared with the server's and the client's own CPU, this
    shows whether something else was running during a measurement."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    busy = sum(delta[:8]) - delta[3] - delta[4]  # guest time is already inside user/nice
    ticks = float(CLOCK_TICKS)
    return {
        "busy_s": round(busy / ticks, 3),
        "softirq_s": round(delta[6] / ticks, 3),
        "steal_s": round(delta[7] / ticks, 3),
    }


def other_cpu_share(
    usage: dict[str, float], server_s: float, client_s: float, irq_accounted_apart: bool | None = None
) -> float:
    """Share of the machine's busy time used by neither the server nor the load
    generator: other processes (a compiler, an indexer...), and steal.

    Softirq time is subtracted only when the kernel keeps it out of task times
    (`irq_time_accounting`); otherwise it is already inside the server's and the
    client's stime, and subtracting the softirq column as well would count it twice
    (which pinned this figure at 0 on every run before 2026-12-04)."""
    busy = usage["busy_s"]
    if busy <= 0:
        return 0.0
    apart = IRQ_TIME_ACCOUNTING if irq_accounted_apart is None else irq_accounted_apart
    other = busy - server_s - client_s - (usage["softirq_s"] if apart else 0.0)
    return round(max(0.0, other) / busy, 3)
