"""The blocking-endpoint scenario: fast-request latency while a handler blocks its worker.

`apps/blocking_app.py` has ``GET /fast`` and ``GET /block``; the latter calls
``time.sleep(0.05)`` inside ``async def`` and so holds its worker's event loop
for 50 ms. Every server runs the same number of workers. Per server, per round:

1. start it, check both endpoints, warm up with ``/fast`` at the scenario's rate;
2. "alone": ``/fast`` at a fixed rate (open loop, loadgen/fixed_rate.rs) with
   nothing else running: the baseline;
3. "with /block": the same ``/fast`` load while a second generator sends
   `BLOCK_RATE` requests/s to ``/block`` over `BLOCK_CONNECTIONS` connections of
   its own. The ``/fast`` generator opens its connections and sends for
   `BLOCK_LEAD_S` before its measured window (``--warmup``); the ``/block``
   generator starts halfway through that lead and stops after the window, so
   every measured ``/fast`` request can meet a block.

The order in step 3 matters: a worker blocked in ``time.sleep`` accepts no
connections, so ``/fast`` connections opened while blocks are already under way
would all land on the free worker of a server that pins connections, which
hides exactly what the scenario is for. Opened first, they spread over the
workers as they would in a service that has been up for a while.

The figure that matters is ``/fast``'s tail in step 3 against step 2. A server
that pins each connection to one worker makes the ``/fast`` requests on a
blocked worker wait for the sleep to end; uringapi chooses a worker per request
(fewest in flight, and none marked stalled by ``--stall-timeout``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import fixed_rate, machine, metrics, process, proctree, runner
from .cells import Cell
from .runner import Outcome, Plan, Row, fmt_us, median_of, rotated, say
from .servers import Server

APP = "blocking_app:app"
FAST = Cell("blocking-fast", "blocking", APP, "/fast", expect_contains=b'"message":"Hello, world!"')
BLOCK = Cell("blocking-block", "blocking", APP, "/block", expect_contains=b'"blocked_ms":50')
BLOCK_MS = 50
"""What ``/block`` sleeps (apps/blocking_app.py BLOCK_SECONDS)."""
BLOCK_RATE = 4.0
BLOCK_CONNECTIONS = 4
"""One ``/block`` request per second on each; with several connections a server
that pins connections to workers is likely to see blocks on each of its workers."""
BLOCK_LEAD_S = 0.5
DEFAULT_FAST_RATE = 1000.0
"""``/fast`` requests per second. Fixed, not derived from a peak, so that runs
compare across days: about a fifth of the slowest server's saturated throughput on
a FastAPI JSON endpoint on the 2-CPU machine this was written on (see the
fastapi-json cell), so latency is measured well below saturation."""
SCENARIO = "blocking"
"""The ``cell`` of this scenario's rows."""


@dataclass(frozen=True)
class BlockingPlan:
    binary: Path
    """The fixed-rate generator."""
    fast_rate: float
    fast_connections: int
    duration_s: int
    """Length of each measured phase (alone, with /block)."""


def run(plan: Plan, bp: BlockingPlan) -> Outcome:
    outcome = Outcome([], [])
    servers = [s for s in plan.servers if s.runs(FAST)]
    for r in range(plan.rounds):
        for position, server in enumerate(rotated(servers, r)):
            where = {"round": r + 1, "cell": SCENARIO, "server": server.name, "policy": policy(plan)}
            where["position"] = position
            runner.attempt(outcome, where, partial(_once, plan, bp, server, r), _print)
    return outcome


def policy(plan: Plan) -> str:
    """One policy for every server in this scenario: batch when it is among the run's."""
    return "batch" if "batch" in plan.policies else plan.policies[0]


def _once(plan: Plan, bp: BlockingPlan, server: Server, r: int) -> Row:
    port, metrics_port = runner.ports_for(server)
    log = plan.log_dir / f"r{r + 1}-{SCENARIO}-{server.name}.log"
    cmd = server.command(FAST, port, plan.settings, metrics_port, policy(plan))
    with process.running(cmd, FAST, port, log, {**plan.env, **server.env(FAST)}) as pid:
        _check(BLOCK, port)
        fixed_rate.run(bp.binary, FAST, port, bp.fast_rate, bp.fast_connections, plan.warmup_s)
        alone = fixed_rate.run(bp.binary, FAST, port, bp.fast_rate, bp.fast_connections, bp.duration_s)
        channel = metrics.Window.open(metrics_port)
        before, times_before = proctree.snapshot(pid), machine.cpu_times()
        fast_load = fixed_rate.start(
            bp.binary, FAST, port, bp.fast_rate, bp.fast_connections, bp.duration_s, warmup_s=BLOCK_LEAD_S
        )
        blocker: fixed_rate.Running | None = None
        try:
            time.sleep(BLOCK_LEAD_S / 2)
            block_s = bp.duration_s + BLOCK_LEAD_S
            blocker = fixed_rate.start(bp.binary, BLOCK, port, BLOCK_RATE, BLOCK_CONNECTIONS, block_s)
            fast = fast_load.finish()
            cpu, times_after = proctree.window(before, proctree.snapshot(pid)), machine.cpu_times()
            block = blocker.finish()
        except BaseException:
            for load in (fast_load, blocker):
                if load is not None:
                    load.stop()
            raise
        channel_figures = metrics.close(channel)
    return {
        "fast_alone": _load(alone),
        "fast": _load(fast),
        "block": _load(block),
        "cpu_s": round(cpu.cpu_s, 3),
        "cpu_by_process": cpu.by_process,
        "client_cpu_s": round(fast.client_cpu_s + block.client_cpu_s, 3),
        **runner.machine_fields(times_before, times_after, cpu.cpu_s, fast.client_cpu_s + block.client_cpu_s),
        **channel_figures,
        "command": cmd,
    }


def _check(cell: Cell, port: int) -> None:
    status, body = process.request(cell, port)
    wrong = cell.check(status, body)
    if wrong is not None:
        raise process.ServerError(f"wrong response for {cell.method} {cell.path}: {wrong}")


def _load(result: fixed_rate.FixedRateResult) -> Row:
    return {
        "target_rate": result.target_rate,
        "achieved_rate": result.achieved_rate,
        "connections": result.connections,
        "sent": result.sent,
        "completed": result.completed,
        "non_2xx": result.non_2xx,
        "errors": result.errors,
        "late_sends": result.late_sends,
        "latency_us": result.latency_us,
    }


def summarize(rows: list[Row]) -> dict[str, Row]:
    """{server: medians over rounds}; counts (errors, requests, stalls) are summed."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["server"], []).append(row)
    summary: dict[str, Row] = {}
    for server, group in groups.items():
        stalls = [r["worker_stalls"] for r in group if r.get("worker_stalls") is not None]
        summary[server] = {
            "rounds": len(group),
            "achieved_rate": median_of(group, lambda r: r["fast"]["achieved_rate"]),
            **_latency_medians(group, "fast", ""),
            **_latency_medians(group, "fast_alone", "alone_"),
            "errors_total": sum(_errors(r["fast"]) + _errors(r["fast_alone"]) for r in group),
            "late_sends_total": sum(r["fast"]["late_sends"] + r["fast_alone"]["late_sends"] for r in group),
            "block_sent": sum(r["block"]["sent"] for r in group),
            "block_completed": sum(r["block"]["completed"] - r["block"]["non_2xx"] for r in group),
            "block_errors": sum(_errors(r["block"]) for r in group),
            "block_p50_us": median_of(group, lambda r: r["block"]["latency_us"]["p50"]),
            "worker_stalls": sum(stalls) if stalls else None,
            "doorbells_per_request": median_of(group, lambda r: r.get("doorbells_per_request")),
            "other_cpu_share_max": max(r["other_cpu_share"] for r in group),
        }
    return summary


def _latency_medians(group: list[Row], phase: str, prefix: str) -> Row:
    """p50 .. max of one phase's latency, each the median over rounds."""
    return {
        f"{prefix}{p}_us": round(statistics.median(r[phase]["latency_us"][p] for r in group), 2)
        for p in ("p50", "p90", "p99", "p999", "max")
    }


def _errors(load: Row) -> int:
    return int(load["errors"] + load["non_2xx"])


def describe(plan: Plan, bp: BlockingPlan) -> dict[str, Any]:
    """The scenario's settings, for the results document."""
    return {
        "app": APP,
        "fast_path": FAST.path,
        "block_path": BLOCK.path,
        "block_ms": BLOCK_MS,
        "workers": plan.settings.workers,
        "policy": policy(plan),
        "fast_rate": bp.fast_rate,
        "fast_connections": bp.fast_connections,
        "block_rate": BLOCK_RATE,
        "block_connections": BLOCK_CONNECTIONS,
        "duration_s": bp.duration_s,
        "warmup_s": plan.warmup_s,
        "generator": "benches/e2e/loadgen/fixed_rate.rs (open loop, latency from scheduled send time)",
    }


def _print(row: Row) -> None:
    fast, alone, block = row["fast"], row["fast_alone"], row["block"]
    lat = fast["latency_us"]
    stalls = row.get("worker_stalls")
    say(
        f"round {row['round']} {SCENARIO:<18} {row['server']:<10} /fast {fast['target_rate']:,.0f}/s  "
        f"p50 {fmt_us(lat['p50']):>8}  p99 {fmt_us(lat['p99']):>8}  p99.9 {fmt_us(lat['p999']):>8}  "
        f"(alone p99 {fmt_us(alone['latency_us']['p99'])})  errors {_errors(fast) + _errors(alone)}  "
        f"/block {block['completed'] - block['non_2xx']}/{block['sent']}"
        + ("" if stalls is None else f"  stalls {stalls}")
    )
