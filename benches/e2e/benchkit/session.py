"""One benchmark session: plan it, run it, assemble and write the results."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import dataclasses

from . import blocking, chart, h2, idle, machine, overhead, paths, prereqs, report, runner, search, websocket
from .cells import FIXED_RATE_CELL, Cell, by_name
from .servers import Server, Settings
from .wrk import LoadShape

SCHEMA_VERSION = 2
"""2: rows name their scheduling policy; medians are each server's at its best policy,
with every policy's under "by_policy"."""
BEST_PEER = "best-peer"
"""--fixed-rate-basis: the fastest server that is not uringapi's (granian or uvicorn)."""
OURS = ("uringapi", "native-ref")
WRK_THREADS = 1
"""One wrk thread: on 2 cores, a second would take CPU from the servers under test."""
Doc = dict[str, Any]


def run(args: argparse.Namespace, cells: list[Cell], servers: list[Server], wrk: str) -> Doc:
    started = dt.datetime.now().astimezone()
    available, skipped = _split_available(servers, cells)
    fixed_plan, fixed_skip = _fixed_rate_plan(args, cells)
    plan = runner.Plan(
        cells=cells,
        servers=available,
        settings=Settings(workers=args.workers, threads=args.threads),
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        shape=LoadShape(threads=WRK_THREADS, connections=args.connections),
        wrk=wrk,
        env={"BENCH_STATIC_DIR": str(prereqs.write_static_file())},
        log_dir=paths.WORK_DIR / "logs" / started.strftime("%Y%m%d-%H%M%S"),
        fixed_rate=fixed_plan,
        policies=tuple(args.policies),
    )
    _say(f"servers: {', '.join(s.name for s in available) or 'none'}; cells: {', '.join(c.name for c in cells)}")
    _say(f"logs: {plan.log_dir}")
    _say(f"scheduling policies: {', '.join(plan.policies)} (uringapi --sched; every other server under chrt)")
    for server in available:
        _say(f"gc: {server.name}: {server.gc_note()}")
    found: dict[str, Any] = {"skipped": "disabled with --no-search"}
    if not args.no_search:
        _say(f"config search: {args.probe_duration} s wrk probes per setting, one knob at a time")
        found = search.run_all(plan, search.SearchPlan(args.probe_duration, args.probe_warmup))
        configs = {
            cell: {server: {policy: r["config"] for policy, r in by_policy.items()} for server, by_policy in s.items()}
            for cell, s in found.items()
        }
        plan = dataclasses.replace(plan, configs=configs)
    saturation = runner.run_saturation(plan)
    medians = runner.summarize_saturation(saturation.rows)
    server_overhead = _overhead(args, plan, medians)
    fixed = _fixed_rate(plan, medians, fixed_skip)
    noisy = _noisy(args, plan, medians, fixed_skip)
    blocked = _blocking(args, plan)
    idle_cell = idle.cell(plan, None if args.no_idle else args.idle_connections)
    ws = _websocket(args, plan)
    h2_cell = _h2(args, plan)
    return {
        "schema": SCHEMA_VERSION,
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "config": _config(args, cells),
        "machine": machine.describe(wrk, prereqs.find_rustc()),
        "servers": _server_info(available, skipped),
        "cells": {c.name: {"app": c.target, "method": c.method, "path": c.path} for c in cells},
        "skipped": skipped,
        "rounds": saturation.rows,
        "failures": saturation.failures,
        "medians": medians,
        "search": found,
        "overhead": server_overhead,
        "fixed_rate": fixed,
        "noisy": noisy,
        "blocking": blocked,
        "idle": idle_cell,
        "websocket": ws,
        "h2": h2_cell,
    }


def write_outputs(doc: Doc, out: Path, stem: str, update_readme: bool) -> int:
    """Write <stem>.json/.md/.png into `out`; returns the process exit code."""
    out.mkdir(parents=True, exist_ok=True)
    table = report.markdown(doc)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    report.write_json(doc, written[0])
    written[1].write_text(table)
    if doc["medians"]:
        chart.draw(doc, out / f"{stem}.png")
        written.append(out / f"{stem}.png")
    if update_readme and report.update_readme(paths.README, report.readme_section(doc, written[0])):
        written.append(paths.README)
    print(table)
    for path in written:
        _say(f"wrote {path}")
    sections = ("overhead", "fixed_rate", "noisy", "blocking", "idle", "websocket", "h2")
    failures = sum(len((doc.get(key) or {}).get("failures", [])) for key in sections)
    failures += len(doc["failures"])
    if failures:
        _say(f"error: {failures} run(s) failed (see the notes above and the server logs)")
        return 1
    if not doc["medians"]:
        _say("warning: nothing was measured (every server was skipped)")
    return 0


def _split_available(servers: list[Server], cells: list[Cell]) -> tuple[list[Server], list[dict[str, Any]]]:
    available, skipped = [], []
    for server in servers:
        wanted = [c.name for c in cells if server.runs(c)]
        if not wanted:
            continue
        reason = server.missing()
        if reason is None:
            available.append(server)
            continue
        skipped.append({"server": server.name, "cells": wanted, "reason": reason})
        _say(f"skip: {server.name} ({', '.join(wanted)}): {reason}")
    return available, skipped


def _fixed_rate_plan(args: argparse.Namespace, cells: list[Cell]) -> tuple[runner.FixedRatePlan | None, str | None]:
    if args.no_fixed_rate:
        return None, "disabled with --no-fixed-rate"
    if FIXED_RATE_CELL not in {c.name for c in cells}:
        return None, f"its rate comes from the {FIXED_RATE_CELL} cell, which was not selected"
    try:
        binary = Path(prereqs.ensure_oha()) if args.loadgen == "oha" else prereqs.build_loadgen()
    except prereqs.SetupError as exc:
        _say(f"skip: fixed-rate run: {exc} (hint: {exc.hint})")
        return None, str(exc)
    return runner.FixedRatePlan(
        binary, by_name(FIXED_RATE_CELL), args.fixed_rate_fraction, args.fixed_rate_connections,
        args.fixed_rate_basis, args.loadgen,
    ), None


def _generator(fr: runner.FixedRatePlan) -> str:
    if fr.loadgen == "oha":
        return f"oha {fr.binary} -q <rate> --latency-correction (open loop, latency from each request's due time)"
    return "benches/e2e/loadgen/fixed_rate.rs (open loop, latency from scheduled send time)"


def _basis(fr: runner.FixedRatePlan, medians: dict[str, dict[str, Any]]) -> Doc | None:
    """The server whose median peak on the fixed-rate cell sets the rate, or None."""
    peaks = {s: m["rps"] for s, m in medians.get(fr.cell.name, {}).items() if m["rps"]}
    if not peaks:
        return None
    peers = {s: rps for s, rps in peaks.items() if s not in OURS}
    if fr.basis == BEST_PEER and peers:
        basis = max(peers, key=peers.__getitem__)
    else:
        basis = fr.basis if fr.basis in peaks else min(peaks, key=peaks.__getitem__)
    return {
        "server": basis,
        "policy": medians[fr.cell.name][basis].get("policy"),
        "rps": peaks[basis],
        "slowest": basis != fr.basis and not (fr.basis == BEST_PEER and basis in peers),
        "best_peer": fr.basis == BEST_PEER and basis in peers,
    }


def _fixed_rate(plan: runner.Plan, medians: dict[str, dict[str, Any]], skip: str | None) -> Doc:
    fr = plan.fixed_rate
    if fr is None:
        return {"skipped": skip}
    basis = _basis(fr, medians)
    if basis is None:
        return {"skipped": f"no saturation figures for {fr.cell.name}"}
    rate = basis["rps"] * fr.fraction
    _say(
        f"fixed rate: {rate:,.0f} req/s = {fr.fraction:.0%} of {basis['server']}'s {basis['rps']:,.0f} req/s "
        f"(under {basis['policy']})"
    )
    outcome = runner.run_fixed_rate(plan, fr, rate)
    return {
        "cell": fr.cell.name,
        "rate": round(rate, 1),
        "fraction": fr.fraction,
        "connections": fr.connections,
        "basis": basis,
        "generator": _generator(fr),
        "rounds": outcome.rows,
        "failures": outcome.failures,
        "medians": runner.summarize_fixed_rate(outcome.rows),
    }


def _overhead(args: argparse.Namespace, plan: runner.Plan, medians: dict[str, dict[str, Any]]) -> Doc:
    if args.no_overhead:
        return {"skipped": "disabled with --no-overhead"}
    _say("server overhead: one more run per cell and server with the app wrapped by apps/app_cpu.py")
    outcome = overhead.run(plan, medians)
    return {**overhead.describe(), "rows": outcome.rows, "failures": outcome.failures}


def _noisy(args: argparse.Namespace, plan: runner.Plan, medians: dict[str, dict[str, Any]], skip: str | None) -> Doc:
    """The noisy-neighbour cell: the fixed-rate run again, at `--noisy-fraction` of the
    same basis peak, with a CPU-bound process beside the server."""
    fr = plan.fixed_rate
    if args.no_noisy:
        return {"skipped": "disabled with --no-noisy"}
    if fr is None:
        return {"skipped": skip}
    basis = _basis(fr, medians)
    if basis is None:
        return {"skipped": f"no saturation figures for {fr.cell.name}"}
    rate = basis["rps"] * args.noisy_fraction
    share = f"{args.noisy_fraction:.0%} of {basis['server']}'s peak"
    _say(f"noisy neighbour: {rate:,.0f} req/s = {share}, beside a CPU hog")
    outcome = runner.run_fixed_rate(plan, fr, rate, hog=True)
    return {
        "cell": fr.cell.name,
        "rate": round(rate, 1),
        "fraction": args.noisy_fraction,
        "connections": fr.connections,
        "basis": basis,
        "hog": "one `python3 -c 'while True: pass'` process, SCHED_OTHER, unpinned, running from before the "
        "server starts until it stops",
        "generator": _generator(fr),
        "rounds": outcome.rows,
        "failures": outcome.failures,
        "medians": runner.summarize_fixed_rate(outcome.rows, best="p99"),
    }


def _blocking(args: argparse.Namespace, plan: runner.Plan) -> Doc:
    if args.no_blocking:
        return {"skipped": "disabled with --no-blocking"}
    if not any(s.runs(blocking.FAST) for s in plan.servers):
        return {"skipped": "no selected server runs Python apps"}
    try:
        binary = prereqs.build_loadgen()
    except prereqs.SetupError as exc:
        _say(f"skip: blocking-endpoint scenario: {exc} (hint: {exc.hint})")
        return {"skipped": str(exc)}
    bp = blocking.BlockingPlan(binary, args.blocking_rate, args.fixed_rate_connections, args.blocking_duration)
    _say(
        f"blocking endpoint: /fast at {bp.fast_rate:,.0f} req/s while /block (a {blocking.BLOCK_MS} ms "
        f"time.sleep in async def) gets {blocking.BLOCK_RATE:g} req/s"
    )
    outcome = blocking.run(plan, bp)
    return {
        **blocking.describe(plan, bp),
        "rounds": outcome.rows,
        "failures": outcome.failures,
        "medians": blocking.summarize(outcome.rows),
    }


def _websocket(args: argparse.Namespace, plan: runner.Plan) -> Doc:
    if args.no_websocket:
        return {"skipped": "disabled with --no-websocket"}
    if not any(s.runs(websocket.CELL) for s in plan.servers):
        return {"skipped": "no selected server runs Python apps"}
    wp = websocket.WsPlan(args.ws_connections, args.ws_idle)
    _say(
        f"websocket: echo of {', '.join(websocket.label(s) for s in wp.sizes)} messages over "
        f"{wp.connections} WebSockets; memory of {wp.idle:,} idle WebSockets"
    )
    found: Doc = {"skipped": "disabled with --no-search"}
    if not args.no_search:
        _say(f"websocket config search: {args.probe_duration} s echo probes per setting (benchkit/websocket.py)")
        wp, found = websocket.search_peers(plan, wp, args.probe_duration, args.probe_warmup)
    outcome = websocket.run(plan, wp)
    return {
        **websocket.describe(plan, wp),
        "search": found,
        "rounds": outcome.rows,
        "failures": outcome.failures,
        "medians": websocket.summarize(outcome.rows),
    }


def _h2(args: argparse.Namespace, plan: runner.Plan) -> Doc:
    if args.no_h2:
        return h2.cell(plan, None)
    try:
        binary = prereqs.ensure_h2load(install=not args.no_setup)
    except prereqs.SetupError as exc:
        _say(f"skip: HTTP/2 cell: {exc} (hint: {exc.hint})")
        return h2.cell(plan, None, str(exc))
    return h2.cell(plan, binary, probe_s=None if args.no_search else args.probe_duration,
                   probe_warmup_s=args.probe_warmup)


def _config(args: argparse.Namespace, cells: list[Cell]) -> dict[str, Any]:
    return {
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "workers": args.workers,
        "threads": args.threads,
        "policies": list(args.policies),
        "search": not args.no_search,
        "probe_duration_s": args.probe_duration,
        "probe_warmup_s": args.probe_warmup,
        "wrk_threads": WRK_THREADS,
        "connections": args.connections,
        "blocking_duration_s": args.blocking_duration,
        "cells": [c.name for c in cells],
        "argv": sys.argv[1:],
    }


def _server_info(available: list[Server], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    info: dict[str, Any] = {
        s.name: {"status": "available", "version": s.version(), "gc": s.gc_note()} for s in available
    }
    for s in skipped:
        info[s["server"]] = {"status": "skipped", "reason": s["reason"]}
    return info


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
