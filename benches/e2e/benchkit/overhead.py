"""Server overhead per request: total CPU-µs/req minus the app's own CPU-µs/req.

The total is the saturation median of a (cell, server) at the server's best policy.
The app's own share comes from one more run of the same server, config and policy
with the cell's app wrapped by `apps/app_cpu.py`, which sums the thread CPU time of
the app's synchronous segments in every worker (see there for the method and its
limits) and writes the totals to a folder the harness reads before and after the
measured window. The difference is what the server costs per request, whatever
the app: parsing, the event loop's turns, the ASGI glue, the sockets, and for
uringapi its front end and channel. native-ref runs no app and has no such figure.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import metrics, process, runner, wrk
from .cells import Cell
from .runner import Outcome, Plan, Row
from .servers import Server

WRAPPER = "app_cpu:app"


def read(folder: Path) -> tuple[int, int]:
    """Requests and app nanoseconds summed over the worker files in `folder`."""
    requests = ns = 0
    for path in folder.glob("[0-9]*"):
        if path.suffix:
            continue
        fields = path.read_text().split()
        if len(fields) == 3:
            requests += int(fields[1])
            ns += int(fields[2])
    return requests, ns


def run(plan: Plan, medians: dict[str, dict[str, Row]]) -> Outcome:
    outcome = Outcome([], [])
    for cell in plan.cells:
        if cell.native_route:
            continue
        for server in plan.servers:
            m = medians.get(cell.name, {}).get(server.name)
            if not server.serves_apps or not server.runs(cell) or m is None:
                continue
            where = {"round": 1, "cell": cell.name, "server": server.name, "policy": m["policy"]}
            runner.attempt(outcome, where, lambda c=cell, s=server, mm=m: _once(plan, c, s, mm), _print)
    return outcome


def _once(plan: Plan, cell: Cell, server: Server, m: Row) -> Row:
    policy = m["policy"]
    wrapped = replace(cell, target=WRAPPER)
    folder = plan.log_dir / f"app-cpu-{cell.name}-{server.name}-{policy}"
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **plan.env, **server.env(wrapped), "BENCH_APP_CPU_TARGET": cell.target, "BENCH_APP_CPU_DIR": str(folder),
    }  # fmt: skip
    port = process.free_port()
    cmd = server.command(wrapped, port, plan.settings_for(cell, server, policy), None, policy)
    with process.running(cmd, wrapped, port, folder.with_suffix(".log"), env):
        wrk.run(plan.wrk, wrapped, port, plan.warmup_s, plan.shape)
        time.sleep(metrics.SETTLE_S)  # longer than the wrapper's flush period
        before = read(folder)
        wrk.run(plan.wrk, wrapped, port, plan.duration_s, plan.shape)
        time.sleep(metrics.SETTLE_S)
        after = read(folder)
    requests, ns = after[0] - before[0], after[1] - before[1]
    if requests <= 0:
        raise process.ServerError(f"the app-CPU wrapper counted no requests in {folder}")
    app_us = round(ns / requests / 1000, 2)
    total = m["cpu_us_per_req"]
    return {
        "app_requests": requests,
        "app_cpu_us_per_req": app_us,
        "total_cpu_us_per_req": total,
        "server_overhead_us_per_req": None if total is None else round(total - app_us, 2),
        "config": m.get("config"),
        "command": cmd,
    }


def _print(row: Row) -> None:
    runner.say(
        f"overhead {row['cell']:<18} {row['server']:<10} {row['policy']:<5} app {row['app_cpu_us_per_req']:.1f} "
        f"of {row['total_cpu_us_per_req']} CPU-µs/req: server {row['server_overhead_us_per_req']} µs/req"
    )


def describe() -> dict[str, Any]:
    return {
        "method": "total CPU-µs/req (saturation median, best policy) minus the app's own CPU-µs/req, measured "
        "in every worker by apps/app_cpu.py (thread CPU time of the app's synchronous segments between "
        "send/receive calls) in a separate run of the same server, config and policy",
    }
