"""Cross-check of our open-loop generator (loadgen/fixed_rate.rs) against oha.

Both send GET / of the hello cell at the same fixed rate over the same number of keep-alive
connections to the same running server, one after the other (the order alternates by
round), and time each request from when it was due (oha: `--latency-correction`), so
neither hides a slow server behind a slow send. Per server and round: one server start,
a warm-up at the rate with our generator, then each generator for `--duration` seconds.
The server's CPU per request over each measured window is recorded too.

    oha_check.py [--servers uringapi,granian] [--rate 10000] [--connections 32]
                 [--duration 5] [--rounds 2] [--out benches/results/oha-check-<date>.json]

oha comes from crates.io (`cargo install --locked oha`, done here when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import cells, fixed_rate, machine, paths, prereqs, process, proctree, runner, servers  # noqa: E402
from benchkit.servers import Settings  # noqa: E402

LOADGENS = ("fixed_rate", "oha")
PERCENTILES = ("p50", "p90", "p99", "p999")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="uringapi,granian", help="comma list (default uringapi,granian)")
    p.add_argument("--rate", type=float, default=10_000.0, help="requests per second (default 10000)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--duration", type=int, default=5, help="measured seconds per generator (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds per server start (default 1)")
    p.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    p.add_argument("--policy", choices=servers.POLICIES, default="batch", help="scheduling policy (default batch)")
    p.add_argument("--out", type=Path, help="raw file (default benches/results/oha-check-<date>.json)")
    args = p.parse_args(argv)
    if min(args.rate, args.connections, args.duration, args.warmup, args.rounds) <= 0:
        p.error("--rate, --connections, --duration, --warmup and --rounds must be positive")
    return args


def run_one(gen: str, binary: Path, port: int, rate: float, connections: int, duration_s: int) -> dict[str, Any]:
    run = fixed_rate.run_oha if gen == "oha" else fixed_rate.run
    r = run(binary, cells.by_name("hello"), port, rate, connections, duration_s)
    return {
        "achieved_rate": r.achieved_rate,
        "sent": r.sent,
        "completed": r.completed,
        "non_2xx": r.non_2xx,
        "errors": r.errors,
        "late_sends": r.late_sends,
        "latency_us": r.latency_us,
        "client_cpu_s": round(r.client_cpu_s, 3),
    }


def measure(args: argparse.Namespace, server: servers.Server, r: int, loadgen: Path, oha_bin: Path,
            env: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    cell = cells.by_name("hello")
    port = process.free_port()
    cmd = server.command(cell, port, Settings(workers=2, threads=1), None, args.policy)
    log = paths.WORK_DIR / "logs" / f"oha-check-r{r + 1}-{server.name}.log"
    order = LOADGENS if r % 2 == 0 else LOADGENS[::-1]
    rows = []
    with process.running(cmd, cell, port, log, {**env, **server.env(cell)}) as pid:
        fixed_rate.run(loadgen, cell, port, args.rate, args.connections, args.warmup)
        for position, gen in enumerate(order):
            before = proctree.snapshot(pid)
            binary = oha_bin if gen == "oha" else loadgen
            row = run_one(gen, binary, port, args.rate, args.connections, args.duration)
            cpu = proctree.window(before, proctree.snapshot(pid))
            row["server_cpu_us_per_req"] = runner.per_request_us(cpu.cpu_s, row["completed"])
            rows.append({"round": r + 1, "server": server.name, "loadgen": gen, "position": position, **row})
            lat = row["latency_us"]
            print(f"round {r + 1} {server.name:<9} {gen:<10} {row['achieved_rate']:>9,.0f} req/s  "
                  f"p50 {lat['p50']:>8,.0f} µs  p99 {lat['p99']:>8,.0f} µs  "
                  f"server {row['server_cpu_us_per_req']} CPU-µs/req  errors {row['errors']}", flush=True)  # fmt: skip
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server: each generator's median p50/p99 over rounds, and oha's over ours."""
    out: dict[str, Any] = {}
    for server in runner.ordered_servers(r["server"] for r in rows):
        med: dict[str, dict[str, float | None]] = {}
        for gen in LOADGENS:
            mine = [r for r in rows if r["server"] == server and r["loadgen"] == gen]
            med[gen] = {
                **{p: runner.median_of(mine, lambda r, p=p: r["latency_us"].get(p)) for p in PERCENTILES},
                "achieved_rate": runner.median_of(mine, lambda r: r["achieved_rate"]),
                "server_cpu_us_per_req": runner.median_of(mine, lambda r: r["server_cpu_us_per_req"]),
            }
        ratio = {
            f"{p}_oha_over_ours": round(med["oha"][p] / med["fixed_rate"][p], 2)
            for p in PERCENTILES
            if med["oha"][p] and med["fixed_rate"][p]
        }
        out[server] = {**med, **ratio}
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        chosen = servers.select_runnable(args.servers)
    except servers.Unusable as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    try:
        oha_bin = Path(prereqs.ensure_oha())
        loadgen = prereqs.build_loadgen()
    except prereqs.SetupError as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    env = {"BENCH_STATIC_DIR": str(prereqs.write_static_file())}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc: dict[str, Any] = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "started_at": started,
        "command": [os.path.relpath(sys.argv[0], paths.REPO), *argv],
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": machine.describe(None, prereqs.find_rustc()),
        "oha": subprocess.run([oha_bin, "--version"], capture_output=True, text=True).stdout.strip(),
        "rows": [],
    }
    for r in range(args.rounds):
        for server in runner.rotated(chosen, r):
            doc["rows"] += measure(args, server, r, loadgen, oha_bin, env)
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["medians"] = summarize(doc["rows"])
    out = args.out or paths.RESULTS_DIR / f"oha-check-{doc['date']}.json"
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    for server, m in doc["medians"].items():
        print(f"{server}: p50 ours {m['fixed_rate']['p50']} µs, oha {m['oha']['p50']} µs; "
              f"p99 ours {m['fixed_rate']['p99']} µs, oha {m['oha']['p99']} µs")  # fmt: skip
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    runner_python = paths.VENV_PYTHON
    if Path(sys.prefix).resolve() != paths.VENV.resolve() and runner_python.exists():
        os.execv(runner_python, [str(runner_python), *sys.argv])
    sys.exit(main(sys.argv[1:]))
