"""The measurement loop: rounds x cells x servers, in alternating order."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from . import fixed_rate, machine, metrics, process, proctree, search, wrk
from .cells import Cell
from .servers import Server, Settings

T = TypeVar("T")
NOISE_WARNING_SHARE = 0.15
"""Warn about a run when more than this share of busy CPU went to neither server nor client."""
SERVER_ORDER = ("native-ref", "uringapi", "granian", "uvicorn")
"""The order of servers in every table; a server not listed goes last."""
Row = dict[str, Any]


@dataclass(frozen=True)
class FixedRatePlan:
    binary: Path
    cell: Cell
    fraction: float
    """Target rate as a fraction of the basis server's median peak on `cell`."""
    connections: int
    basis: str = "granian"
    """The server whose peak is the basis; when it has no peak (or is "slowest"), the slowest
    server's."""
    loadgen: str = "fixed_rate"
    """`fixed_rate` (loadgen/fixed_rate.rs) or `oha`; `binary` is that generator."""

    def run(self, port: int, rate: float, duration_s: float) -> fixed_rate.FixedRateResult:
        gen = fixed_rate.run_oha if self.loadgen == "oha" else fixed_rate.run
        return gen(self.binary, self.cell, port, rate, self.connections, duration_s)


@dataclass(frozen=True)
class Plan:
    cells: list[Cell]
    servers: list[Server]
    """Servers that are installed; missing ones were recorded as skipped."""
    settings: Settings
    rounds: int
    duration_s: int
    warmup_s: int
    shape: wrk.LoadShape
    wrk: str
    env: dict[str, str]
    log_dir: Path
    fixed_rate: FixedRatePlan | None
    policies: tuple[str, ...] = ("batch",)
    """Scheduling policies each server runs under (servers.POLICIES); every run is one pair."""

    configs: dict[str, dict[str, dict[str, search.Config]]] | None = None
    """{cell: {server: {policy: config}}} from the config search; None: everyone at `settings`."""

    def config(self, cell: Cell, server: Server, policy: str) -> search.Config:
        return ((self.configs or {}).get(cell.name, {}).get(server.name, {})).get(policy, {})

    def settings_for(self, cell: Cell, server: Server, policy: str) -> Settings:
        return search.settings_for(self.settings, self.config(cell, server, policy))

    def variants(self, cell: Cell) -> list[tuple[Server, str]]:
        """(server, policy) pairs that run `cell`, in a fixed order that `rotated` turns."""
        return [(s, p) for s in self.servers if s.runs(cell) for p in self.policies]


@dataclass
class Outcome:
    rows: list[Row]
    failures: list[Row]


def rotated(items: list[T], round_index: int) -> list[T]:
    """Round r starts with item r: every server takes every position in turn,
    so slow drift (thermal, page cache, noisy neighbours) spreads evenly."""
    if not items:
        return []
    k = round_index % len(items)
    return items[k:] + items[:k]


def run_saturation(plan: Plan) -> Outcome:
    outcome = Outcome([], [])
    for r in range(plan.rounds):
        for cell in plan.cells:
            for position, (server, policy) in enumerate(rotated(plan.variants(cell), r)):
                where = {"round": r + 1, "cell": cell.name, "server": server.name, "policy": policy}
                where["config"] = plan.config(cell, server, policy)
                where["position"] = position
                measure = partial(_saturation_once, plan, cell, server, policy, r)
                attempt(outcome, where, measure, _print_saturation)
    return outcome


def run_fixed_rate(plan: Plan, fr: FixedRatePlan, rate: float, hog: bool = False) -> Outcome:
    """Every server at the same fixed rate; with `hog`, beside a CPU-bound process
    (`process.cpu_hog`) for the whole run (the noisy-neighbour cell)."""
    outcome = Outcome([], [])
    for r in range(plan.rounds):
        for position, (server, policy) in enumerate(rotated(plan.variants(fr.cell), r)):
            where = {"round": r + 1, "cell": fr.cell.name, "server": server.name, "policy": policy}
            where["config"] = plan.config(fr.cell, server, policy)
            where["position"] = position
            measure = partial(_fixed_rate_once, plan, fr, server, policy, rate, r, hog)
            attempt(outcome, where, measure, _print_fixed_rate)
    return outcome


def attempt(outcome: Outcome, where: Row, measure: Callable[[], Row], show: Callable[[Row], None]) -> None:
    """Runs one measurement; a failure is recorded and the session goes on."""
    try:
        row = {**where, **measure()}
    except (
        process.ServerError,
        wrk.WrkError,
        fixed_rate.FixedRateError,
        metrics.MetricsError,
        OSError,
        subprocess.TimeoutExpired,
    ) as exc:
        failure = {**where, "error": str(exc)}
        outcome.failures.append(failure)
        say(f"round {where['round']} {where['cell']:<18} {where['server']:<10} {where['policy']:<5} FAILED: {exc}")
        return
    outcome.rows.append(row)
    show(row)
    if row.get("other_cpu_share", 0.0) > NOISE_WARNING_SHARE:
        say(f"  warning: other processes used {row['other_cpu_share']:.0%} of the busy CPU during this run")


def ports_for(server: Server) -> tuple[int, int | None]:
    """A fresh port to serve on, and one for metrics when the server has them."""
    if server.metrics_flag is None:
        return process.free_port(), None
    port, metrics_port = process.free_ports(2)
    return port, metrics_port


def _saturation_once(plan: Plan, cell: Cell, server: Server, policy: str, r: int) -> Row:
    port, metrics_port = ports_for(server)
    log = plan.log_dir / f"r{r + 1}-{cell.name}-{server.name}-{policy}.log"
    cmd = server.command(cell, port, plan.settings_for(cell, server, policy), metrics_port, policy)
    with process.running(cmd, cell, port, log, {**plan.env, **server.env(cell)}) as pid:
        wrk.run(plan.wrk, cell, port, plan.warmup_s, plan.shape)
        # The counters are read outside the CPU window: the reads cost the server nothing measured.
        channel = metrics.Window.open(metrics_port)
        before, times_before = proctree.snapshot(pid), machine.cpu_times()
        result = wrk.run(plan.wrk, cell, port, plan.duration_s, plan.shape)
        cpu, times_after = proctree.window(before, proctree.snapshot(pid)), machine.cpu_times()
        channel_figures = metrics.close(channel)
    log.with_suffix(".wrk.txt").write_text(result.output)
    errors = sum(result.errors.values())
    return {
        "rps": round(result.rps, 1),
        "requests": result.requests,
        "duration_s": round(result.duration_s, 3),
        "latency_us": result.latency_us,
        "errors": result.errors,
        "errors_total": errors,
        "cpu_s": round(cpu.cpu_s, 3),
        "cpu_us_per_req": per_request_us(cpu.cpu_s, result.requests),
        "cpu_by_process": cpu.by_process,
        "client_cpu_s": round(result.client_cpu_s, 3),
        **machine_fields(times_before, times_after, cpu.cpu_s, result.client_cpu_s),
        **channel_figures,
        "command": cmd,
    }


def _fixed_rate_once(
    plan: Plan, fr: FixedRatePlan, server: Server, policy: str, rate: float, r: int, hog: bool
) -> Row:
    port, metrics_port = ports_for(server)
    log = plan.log_dir / f"r{r + 1}-{'noisy' if hog else 'fixed-rate'}-{server.name}-{policy}.log"
    cmd = server.command(fr.cell, port, plan.settings_for(fr.cell, server, policy), metrics_port, policy)
    with contextlib.ExitStack() as stack:
        hog_pid = stack.enter_context(process.cpu_hog()) if hog else None
        row = _fixed_rate_measure(plan, fr, server, rate, cmd, port, metrics_port, log, hog_pid)
    return row


def _fixed_rate_measure(
    plan: Plan, fr: FixedRatePlan, server: Server, rate: float, cmd: list[str], port: int,
    metrics_port: int | None, log: Path, hog_pid: int | None,
) -> Row:  # fmt: skip
    with process.running(cmd, fr.cell, port, log, {**plan.env, **server.env(fr.cell)}) as pid:
        # Warm up at the target rate too: the server should meet the measured
        # load in the state that load brings it to, not straight from saturation.
        fr.run(port, rate, plan.warmup_s)
        channel = metrics.Window.open(metrics_port)
        before, times_before = proctree.snapshot(pid), machine.cpu_times()
        hog_before = proctree.snapshot(hog_pid) if hog_pid is not None else None
        result = fr.run(port, rate, plan.duration_s)
        cpu, times_after = proctree.window(before, proctree.snapshot(pid)), machine.cpu_times()
        hog_s = 0.0 if hog_before is None else proctree.window(hog_before, proctree.snapshot(hog_pid)).cpu_s
        channel_figures = metrics.close(channel)
    # The hog's CPU is the point of the noisy cell, not noise: it counts as the client's side.
    return {
        "target_rate": result.target_rate,
        "achieved_rate": result.achieved_rate,
        "connections": result.connections,
        "sent": result.sent,
        "completed": result.completed,
        "latency_us": result.latency_us,
        "non_2xx": result.non_2xx,
        "errors": result.errors,
        "late_sends": result.late_sends,
        "cpu_s": round(cpu.cpu_s, 3),
        "cpu_us_per_req": per_request_us(cpu.cpu_s, result.completed),
        "cpu_by_process": cpu.by_process,
        "client_cpu_s": round(result.client_cpu_s, 3),
        **({"hog_cpu_s": round(hog_s, 3)} if hog_pid is not None else {}),
        **machine_fields(times_before, times_after, cpu.cpu_s, result.client_cpu_s + hog_s),
        **channel_figures,
        "command": cmd,
    }


def machine_fields(before: list[int], after: list[int], server_s: float, client_s: float) -> Row:
    usage = machine.cpu_usage(before, after)
    return {"machine_cpu": usage, "other_cpu_share": machine.other_cpu_share(usage, server_s, client_s)}


def per_request_us(cpu_s: float, requests: int) -> float | None:
    return round(cpu_s * 1e6 / requests, 2) if requests > 0 else None


# --- medians -----------------------------------------------------------------


def median_of(rows: Iterable[Row], pick: Callable[[Row], float | None]) -> float | None:
    values = [v for v in map(pick, rows) if v is not None]
    return round(statistics.median(values), 2) if values else None


def summarize_saturation(rows: list[Row]) -> dict[str, dict[str, Row]]:
    """{cell: {server: medians at its best policy}}; errors are summed, not medianed."""
    by_policy: dict[str, dict[str, dict[str, Row]]] = {}
    for (cell, server, policy), group in _grouped(rows).items():
        by_policy.setdefault(cell, {}).setdefault(server, {})[policy] = {
            "rounds": len(group),
            "config": group[0].get("config"),
            "rps": median_of(group, lambda r: r["rps"]),
            "rps_min": min(r["rps"] for r in group),
            "rps_max": max(r["rps"] for r in group),
            "p50_us": median_of(group, lambda r: r["latency_us"]["p50"]),
            "p90_us": median_of(group, lambda r: r["latency_us"]["p90"]),
            "p99_us": median_of(group, lambda r: r["latency_us"]["p99"]),
            "cpu_us_per_req": median_of(group, lambda r: r["cpu_us_per_req"]),
            "cpu_us_per_req_min": _min_or_none(r["cpu_us_per_req"] for r in group),
            "cpu_us_per_req_max": _max_or_none(r["cpu_us_per_req"] for r in group),
            "errors_total": sum(r["errors_total"] for r in group),
            "other_cpu_share_max": max(r["other_cpu_share"] for r in group),
            "doorbells_per_request": median_of(group, _doorbells_per_request),
        }
    return {
        cell: {server: at_best(policies, lambda m: m["rps"] or 0.0) for server, policies in servers.items()}
        for cell, servers in by_policy.items()
    }


def at_best(by_policy: dict[str, Row], score: Callable[[Row], float]) -> Row:
    """A server's medians under the policy where `score` is highest, naming that policy,
    with every policy's medians under "by_policy"."""
    best = max(by_policy, key=lambda p: score(by_policy[p]))
    return {**by_policy[best], "policy": best, "by_policy": by_policy}


def summarize_fixed_rate(rows: list[Row], best: str = "cpu") -> dict[str, Row]:
    """{server: medians at its best policy} at the common rate: the lowest CPU-µs/req
    (`best="cpu"`, the half-load cell, whose goal is CPU), or the lowest p99 (`best="p99"`,
    the noisy-neighbour cell, whose goal is the tail: a user beside a noisy neighbour picks
    the policy for latency)."""
    by_policy: dict[str, dict[str, Row]] = {}
    for (_cell, server, policy), group in _grouped(rows).items():
        by_policy.setdefault(server, {})[policy] = {
            "rounds": len(group),
            "config": group[0].get("config"),
            "achieved_rate": median_of(group, lambda r: r["achieved_rate"]),
            "p50_us": median_of(group, lambda r: r["latency_us"]["p50"]),
            "p90_us": median_of(group, lambda r: r["latency_us"]["p90"]),
            "p99_us": median_of(group, lambda r: r["latency_us"]["p99"]),
            "p999_us": median_of(group, lambda r: r["latency_us"]["p999"]),
            "cpu_us_per_req": median_of(group, lambda r: r["cpu_us_per_req"]),
            "errors_total": sum(r["errors"] + r["non_2xx"] for r in group),
            "late_sends_total": _sum_or_none(r["late_sends"] for r in group),
            "other_cpu_share_max": max(r["other_cpu_share"] for r in group),
            "doorbells_per_request": median_of(group, _doorbells_per_request),
        }
    score = {"cpu": _lowest("cpu_us_per_req"), "p99": _lowest("p99_us")}[best]
    return {server: at_best(policies, score) for server, policies in by_policy.items()}


def _lowest(key: str) -> Callable[[Row], float]:
    """A score for `at_best` that prefers the lowest `key`; unknown counts as worst."""

    def score(medians: Row) -> float:
        value: float | None = medians[key]
        return -1e18 if value is None else -value

    return score


def _doorbells_per_request(row: Row) -> float | None:
    """Only uringapi rows have the figure (from its metrics endpoint)."""
    value: float | None = row.get("doorbells_per_request")
    return value


def _grouped(rows: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["cell"], row["server"], row.get("policy", "other")), []).append(row)
    return groups


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    """The sum; None when any is unknown (oha does not count late sends)."""
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)


def _min_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# --- progress ------------------------------------------------------------------


def _print_saturation(row: Row) -> None:
    lat = row["latency_us"]
    say(
        f"round {row['round']} {row['cell']:<18} {row['server']:<10} {row['policy']:<5} "
        f"{row['rps']:>10,.0f} req/s  p50 {fmt_us(lat['p50']):>8}  p99 {fmt_us(lat['p99']):>8}  "
        f"{_fmt_cpu(row['cpu_us_per_req'])} CPU-µs/req  errors {row['errors_total']}{_fmt_doorbells(row)}"
    )


def _print_fixed_rate(row: Row) -> None:
    lat = row["latency_us"]
    say(
        f"round {row['round']} fixed-rate {row['target_rate']:,.0f}/s {row['server']:<10} {row['policy']:<5} "
        f"achieved {row['achieved_rate']:>9,.0f}/s  p50 {fmt_us(lat['p50']):>8}  p99 {fmt_us(lat['p99']):>8}  "
        f"{_fmt_cpu(row['cpu_us_per_req'])} CPU-µs/req  errors {row['errors'] + row['non_2xx']}{_fmt_doorbells(row)}"
    )


def ordered_servers(names: Iterable[str]) -> list[str]:
    """`names` without repeats, in SERVER_ORDER (unknown servers last, by name)."""
    rank = {name: i for i, name in enumerate(SERVER_ORDER)}
    return sorted(set(names), key=lambda s: (rank.get(s, len(rank)), s))


def fmt_num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def failure_line(f: Row) -> str:
    """A failed run as one note line: where it failed and the first line of why."""
    first = f["error"].splitlines()[0] if f["error"] else "?"
    return f"- Failed: round {f['round']} {f['cell']} on {f['server']}: {first}"


def section_notes(section: dict[str, Any], what: str) -> list[str]:
    """The notes of an extra cell's part of the results: why it was skipped, what failed."""
    out = [f"- {what} skipped: {section['skipped']}"] if section.get("skipped") else []
    return out + [failure_line(f) for f in section.get("failures", [])]


def fmt_us(us: float | None) -> str:
    if us is None:
        return "—"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def _fmt_cpu(us: float | None) -> str:
    return "—" if us is None else f"{us:7.1f}"


def _fmt_doorbells(row: Row) -> str:
    per_request = row.get("doorbells_per_request")
    return "" if per_request is None else f"  doorbells/req {per_request:.3f}"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
