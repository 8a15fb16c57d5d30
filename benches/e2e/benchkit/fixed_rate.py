"""Latency without saturation: the open-loop generator in loadgen/fixed_rate.rs, or oha.

wrk is closed-loop (each connection waits for its response before sending the
next request), so its latency is measured at saturation. Here requests leave
on a fixed schedule whatever the server does, and each is timed from its
scheduled send time (see the Rust file's header for the model). `run_oha` does
the same with oha (crates.io) and `--latency-correction`; `benches/e2e/oha_check.py`
compares the two.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import proctree
from .cells import Cell


@dataclass(frozen=True)
class FixedRateResult:
    target_rate: float
    achieved_rate: float
    connections: int
    sent: int
    completed: int
    non_2xx: int
    errors: int
    late_sends: int | None
    """Sends that left more than 1 ms after their slot (connection still busy); oha does not
    report it (None)."""
    latency_us: dict[str, float]
    """p50, p90, p99, p999, max, mean."""
    client_cpu_s: float


class FixedRateError(Exception):
    pass


def run(binary: Path, cell: Cell, port: int, rate: float, connections: int, duration_s: float) -> FixedRateResult:
    """Runs the generator to the end and returns its figures."""
    return start(binary, cell, port, rate, connections, duration_s).finish()


def start(
    binary: Path, cell: Cell, port: int, rate: float, connections: int, duration_s: float, warmup_s: float = 0.0
) -> Running:
    """Starts the generator and returns at once: for a second load beside another one.

    With `warmup_s`, it sends at the same rate for that long first and counts
    only what it sends during the `duration_s` that follows.
    """
    if cell.method != "GET" or cell.body:
        raise FixedRateError(f"the fixed-rate generator only sends GET; cell {cell.name} is {cell.method}")
    cmd = [
        str(binary), "--addr", f"127.0.0.1:{port}", "--path", cell.path,
        "--rate", f"{rate:.1f}", "--connections", str(connections), "--duration", str(duration_s),
    ]  # fmt: skip
    if warmup_s:
        cmd += ["--warmup", str(warmup_s)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Running(proc, warmup_s + duration_s)


@dataclass
class Running:
    proc: subprocess.Popen[str]
    duration_s: float

    def finish(self) -> FixedRateResult:
        """Waits for the generator and parses its report.

        Its CPU is the growth of this process's reaped-children time across the
        wait, so a generator must be finished before the next one is reaped.
        """
        before = proctree.own_children_cpu_seconds()
        try:
            stdout, stderr = self.proc.communicate(timeout=self.duration_s + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        client_cpu = proctree.own_children_cpu_seconds() - before
        if self.proc.returncode != 0:
            raise FixedRateError(f"fixed_rate exited {self.proc.returncode}: {stderr.strip()}")
        raw = json.loads(stdout)
        return FixedRateResult(
            target_rate=raw["target_rate"],
            achieved_rate=raw["achieved_rate"],
            connections=raw["connections"],
            sent=raw["sent"],
            completed=raw["completed"],
            non_2xx=raw["non_2xx"],
            errors=raw["errors"],
            late_sends=raw["late_sends"],
            latency_us=raw["latency_us"],
            client_cpu_s=client_cpu,
        )

    def stop(self) -> None:
        """Kills a generator whose figures are no longer wanted (a failed run)."""
        if self.proc.returncode is None:  # not finished (or stopped) yet
            self.proc.kill()
            self.proc.communicate()


def run_oha(binary: Path, cell: Cell, port: int, rate: float, connections: int, duration_s: float) -> FixedRateResult:
    """oha at a fixed rate (`-q`), latency from each request's due time (`--latency-correction`)."""
    if cell.method != "GET" or cell.body:
        raise FixedRateError(f"the fixed-rate run only sends GET; cell {cell.name} is {cell.method}")
    cmd = [
        str(binary), "--no-tui", "--output-format", "json", "--latency-correction",
        "-z", f"{duration_s:g}s", "-q", f"{rate:.1f}", "-c", str(connections),
        f"http://127.0.0.1:{port}{cell.path}",
    ]  # fmt: skip
    before = proctree.own_children_cpu_seconds()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    except OSError as exc:
        raise FixedRateError(f"cannot run oha: {exc}") from exc
    client_cpu = proctree.own_children_cpu_seconds() - before
    if done.returncode != 0:
        raise FixedRateError(f"oha exited {done.returncode}: {done.stderr.strip()[-500:]}")
    raw = json.loads(done.stdout)
    codes = {str(k): int(v) for k, v in (raw.get("statusCodeDistribution") or {}).items()}
    errors = sum(int(v) for v in (raw.get("errorDistribution") or {}).values())
    completed = sum(codes.values())
    lat, summary = raw["latencyPercentiles"], raw["summary"]
    return FixedRateResult(
        target_rate=rate,
        achieved_rate=round(summary["requestsPerSec"] or 0.0, 1),
        connections=connections,
        sent=completed + errors,
        completed=completed,
        non_2xx=sum(n for code, n in codes.items() if not code.startswith("2")),
        errors=errors,
        late_sends=None,
        latency_us={
            "p50": _us(lat["p50"]), "p90": _us(lat["p90"]), "p99": _us(lat["p99"]), "p999": _us(lat["p99.9"]),
            "max": _us(summary["slowest"]), "mean": _us(summary["average"]),
        },  # fmt: skip
        client_cpu_s=client_cpu,
    )


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 1)
