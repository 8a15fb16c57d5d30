"""Config search: each server's best settings per cell and policy, before the measured rounds.

A peer run at a fixed worker count with default runtime options is not at its best, so
before the rounds every (server, cell, policy) gets short wrk probes over its own knobs:

- workers 1..N (N: the CPUs this process may use), for every server with Python workers;
- front-end threads 1..N for uringapi and native-ref;
- granian's `--runtime-mode st|mt`, `--runtime-threads 1|2` and `--backpressure 64|256`
  (`--loop uvloop` and `--http 1` are always given); uvicorn always gets `--loop uvloop
  --http httptools`. An option the installed version's `--help` lacks is not tried.

The search walks one knob at a time (coordinate descent): starting from the defaults
(`--workers`, `--threads`, each option left out), it tries every other value of the first
knob and keeps the best, then the next knob from there. Cheaper than every combination,
and each knob is tried in the best setting of the ones before. A probe is one server
start and `--probe-duration` seconds of wrk after `--probe-warmup` seconds of it (full runs
1, quick runs none); its score is requests/s.
A probe that fails is recorded with its error and never chosen.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import process, wrk
from .cells import Cell
from .servers import Server, Settings

Config = dict[str, Any]


@dataclass(frozen=True)
class SearchPlan:
    probe_s: int
    warmup_s: int = 1
    cpus: int = len(os.sched_getaffinity(0))


def knobs(server: Server, base: Settings, cpus: int, help_text: str) -> list[tuple[str, list[Any]]]:
    """The knobs tried for `server`, each with its values, the default first."""
    out: list[tuple[str, list[Any]]] = []
    span = list(range(1, max(1, cpus) + 1))
    if server.searches_workers and server.serves_apps:
        out.append(("workers", [base.workers, *[n for n in span if n != base.workers]]))
    if server.searches_threads:
        out.append(("threads", [base.threads, *[n for n in span if n != base.threads]]))
    for option, values in server.options:
        if option in help_text:
            out.append((option, list(values)))
    return out


def settings_for(base: Settings, config: Config) -> Settings:
    extra: list[str] = []
    for key, value in config.items():
        if key.startswith("--") and value is not None:
            extra += [key, str(value)]
    return replace(
        base, workers=config.get("workers", base.workers), threads=config.get("threads", base.threads),
        extra=tuple(extra),
    )  # fmt: skip


def describe(config: Config) -> str:
    parts = [f"{k}={v}" if not k.startswith("--") else f"{k} {v}" for k, v in config.items() if v is not None]
    return " ".join(parts) or "defaults"


def search(
    plan: Any, search_plan: SearchPlan, cell: Cell, server: Server, policy: str, help_text: str
) -> dict[str, Any]:
    """Probe `server` on `cell` under `policy`; {"config", "rps", "probes"}."""
    dims = knobs(server, plan.settings, search_plan.cpus, help_text)
    return descend(dims, lambda config, probes: _probe(plan, search_plan, cell, server, policy, config, probes))


Probe = Callable[[Config, list[dict[str, Any]]], "float | None"]
"""Scores one config (higher is better; None: it failed) and appends its record to the list."""


def descend(dims: list[tuple[str, list[Any]]], probe: Probe, grid: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The best config over `dims` (each knob's values, the default first):
    {"config", "rps", "probes"}.

    The knobs named in `grid` are tried in every combination first (knobs that only pay
    together, like granian's workers and runtime threads: one worker with two threads can
    beat two workers while one worker with one thread loses to both); the rest one at a
    time from the best of those.
    """
    probes: list[dict[str, Any]] = []
    together = [(name, values) for name, values in dims if name in grid]
    alone = [(name, values) for name, values in dims if name not in grid]
    best: Config = {name: values[0] for name, values in dims}
    best_rps: float | None = None
    for combo in itertools.product(*(values for _, values in together)):
        trial = {**best, **dict(zip([name for name, _ in together], combo, strict=True))}
        rps = probe(trial, probes)
        if rps is not None and (best_rps is None or rps > best_rps):
            best, best_rps = trial, rps
    for name, values in alone:
        for value in values[1:]:
            trial = {**best, name: value}
            rps = probe(trial, probes)
            if rps is not None and (best_rps is None or rps > best_rps):
                best, best_rps = trial, rps
    return {"config": best, "rps": best_rps, "probes": probes}


def _probe(
    plan: Any, sp: SearchPlan, cell: Cell, server: Server, policy: str, config: Config,
    probes: list[dict[str, Any]],
) -> float | None:  # fmt: skip
    settings = settings_for(plan.settings, config)
    port, metrics_port = process.free_port(), None
    log = plan.log_dir / f"search-{cell.name}-{server.name}-{policy}-{len(probes)}.log"
    cmd = server.command(cell, port, settings, metrics_port, policy)
    try:
        with process.running(cmd, cell, port, log, {**plan.env, **server.env(cell)}):
            if sp.warmup_s:
                wrk.run(plan.wrk, cell, port, sp.warmup_s, plan.shape)
            result = wrk.run(plan.wrk, cell, port, sp.probe_s, plan.shape)
    except (process.ServerError, wrk.WrkError, OSError) as exc:
        probes.append({"config": config, "rps": None, "error": str(exc).splitlines()[0] if str(exc) else "?"})
        return None
    rps = round(result.rps, 1)
    probes.append({"config": config, "rps": rps, "errors_total": sum(result.errors.values())})
    return rps


def run_all(plan: Any, sp: SearchPlan) -> dict[str, dict[str, dict[str, Any]]]:
    """{cell: {server: {policy: search result}}}, printing each choice."""
    helps = {s.name: s.help_text() for s in plan.servers}
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in plan.cells:
        for server, policy in plan.variants(cell):
            result = search(plan, sp, cell, server, policy, helps[server.name])
            found.setdefault(cell.name, {}).setdefault(server.name, {})[policy] = result
            rps = "failed" if result["rps"] is None else f"{result['rps']:,.0f} req/s"
            print(
                f"config {cell.name:<18} {server.name:<10} {policy:<5} {describe(result['config'])} "
                f"({rps} in {len(result['probes'])} probes)",
                file=sys.stderr,
                flush=True,
            )
    return found
