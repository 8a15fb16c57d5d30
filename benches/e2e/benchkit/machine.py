"""What the results were measured on: hardware, kernel, toolchain, versions."""

from __future__ import annotations

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
    cmd = ["git", "-C", str(paths.REPO), "rev-parse", "HEAD"]
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
    first = (_read("/proc/stat") or "cpu 0").splitlines()[0]
    return [int(v) for v in first.split()[1:]]


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


def other_cpu_share(usage: dict[str, float], server_s: float, client_s: float) -> float:
    """Share of the machine's busy time used by neither the server, the load
    generator nor softirq: other processes (a compiler, an indexer...). A rough
    figure: with IRQ time accounting off, softirq is also inside process times."""
    busy = usage["busy_s"]
    if busy <= 0:
        return 0.0
    other = busy - server_s - client_s - usage["softirq_s"]
    return round(max(0.0, other) / busy, 3)
