"""Two builds of our open-loop generator (loadgen/fixed_rate.rs) side by side.

The generator's own CPU decides how much of a 2-CPU machine is left to the servers in the
fixed-rate cells, so a change to it is measured like a change to a server: both builds
send GET / of the hello cell at the same fixed rate over the same connections to the same
running server, one after the other (the order alternates by round). Per server and
round: one server start, a warm-up at the rate with the current build, then each build
for `--duration` seconds. Recorded per window: the generator's CPU per request, the
server's CPU per request, latency percentiles and late sends.

    loadgen_ab.py --before REV [--servers uringapi,granian] [--rate 46000]
                  [--connections 32] [--duration 10] [--rounds 3]
                  [--config uringapi=other:1:1,granian=batch:1]
                  [--out benches/results/loadgen-ab-<date>.json]

`--before REV` is a git revision whose `benches/e2e/loadgen/fixed_rate.rs` is the
"before" build; "after" is the working tree's.
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

BUILDS = ("before", "after")
SOURCE = "benches/e2e/loadgen/fixed_rate.rs"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="git revision of the 'before' generator")
    p.add_argument("--servers", default="uringapi,granian", help="comma list (default uringapi,granian)")
    p.add_argument("--rate", type=float, default=46_000.0, help="requests per second (default 46000)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    p.add_argument("--duration", type=int, default=10, help="measured seconds per build (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per server start (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument(
        "--config",
        default="uringapi=other:1:1,granian=batch:1,uvicorn=batch:2",
        help="per server policy:workers[:threads] (default: the configs the 2026-12-05 half-load "
        "cell used, uringapi=other:1:1,granian=batch:1,uvicorn=batch:2)",
    )
    p.add_argument("--out", type=Path, help="raw file (default benches/results/loadgen-ab-<date>.json)")
    args = p.parse_args(argv)
    if min(args.rate, args.connections, args.duration, args.warmup, args.rounds) <= 0:
        p.error("--rate, --connections, --duration, --warmup and --rounds must be positive")
    try:
        args.config = _parse_config(args.config)
    except ValueError as exc:
        p.error(f"--config: {exc}")
    return args


def _parse_config(text: str) -> dict[str, tuple[str, Settings]]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, spec = item.partition("=")
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in servers.POLICIES:
            raise ValueError(f"{item!r} is not server=policy:workers[:threads]")
        threads = int(parts[2]) if len(parts) == 3 else 1
        out[name] = (parts[0], Settings(workers=int(parts[1]), threads=threads))
    return out


def build_before(rev: str) -> Path:
    """Compiles the generator as it was at `rev` next to the current build."""
    out_dir = paths.WORK_DIR / "loadgen-before"
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = SOURCE.rsplit("/", 1)[0]
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], cwd=paths.REPO, check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    for name in (n for n in names if n.endswith(".rs")):  # the tool and the modules beside it
        text = subprocess.run(["git", "show", f"{rev}:{folder}/{name}"], cwd=paths.REPO, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
        (out_dir / name).write_text(text)
    src = out_dir / "fixed_rate.rs"
    binary = out_dir / "fixed_rate"
    rustc = prereqs.find_rustc() or "rustc"
    subprocess.run([rustc, "-O", "--edition", "2021", "-o", str(binary), str(src)], check=True)
    return binary


def measure(args: argparse.Namespace, server: servers.Server, r: int, binaries: dict[str, Path],
            env: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    cell = cells.by_name("hello")
    policy, settings = args.config.get(server.name, ("batch", Settings(workers=2, threads=1)))
    port = process.free_port()
    cmd = server.command(cell, port, settings, None, policy)
    log = paths.WORK_DIR / "logs" / f"loadgen-ab-r{r + 1}-{server.name}.log"
    order = BUILDS if r % 2 == 0 else BUILDS[::-1]
    rows = []
    with process.running(cmd, cell, port, log, {**env, **server.env(cell)}) as pid:
        fixed_rate.run(binaries["after"], cell, port, args.rate, args.connections, args.warmup)
        for position, build in enumerate(order):
            before = proctree.snapshot(pid)
            res = fixed_rate.run(binaries[build], cell, port, args.rate, args.connections, args.duration)
            cpu = proctree.window(before, proctree.snapshot(pid))
            row = {
                "round": r + 1, "server": server.name, "policy": policy, "config": vars(settings),
                "build": build, "position": position, "achieved_rate": res.achieved_rate,
                "completed": res.completed, "errors": res.errors, "non_2xx": res.non_2xx,
                "late_sends": res.late_sends, "latency_us": res.latency_us,
                "client_cpu_s": round(res.client_cpu_s, 3),
                "client_cpu_us_per_req": runner.per_request_us(res.client_cpu_s, res.completed),
                "server_cpu_s": round(cpu.cpu_s, 3),
                "server_cpu_us_per_req": runner.per_request_us(cpu.cpu_s, res.completed),
            }  # fmt: skip
            rows.append(row)
            lat = row["latency_us"]
            print(f"round {r + 1} {server.name:<9} {build:<6} {row['achieved_rate']:>9,.0f} req/s  "
                  f"p50 {lat['p50']:>7,.0f} µs  p99 {lat['p99']:>9,.0f} µs  late {row['late_sends']:>7,}  "
                  f"client {row['client_cpu_us_per_req']} · server {row['server_cpu_us_per_req']} CPU-µs/req  "
                  f"errors {row['errors']}", flush=True)  # fmt: skip
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server and build: medians over rounds."""
    out: dict[str, Any] = {}
    for server in runner.ordered_servers(r["server"] for r in rows):
        out[server] = {}
        for build in BUILDS:
            mine = [r for r in rows if r["server"] == server and r["build"] == build]
            out[server][build] = {
                **{p: runner.median_of(mine, lambda r, p=p: r["latency_us"][p]) for p in ("p50", "p90", "p99", "p999")},
                **{k: runner.median_of(mine, lambda r, k=k: r[k]) for k in
                   ("achieved_rate", "late_sends", "client_cpu_us_per_req", "server_cpu_us_per_req")},
            }  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        chosen = servers.select_runnable(args.servers)
    except servers.Unusable as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    try:
        binaries = {"before": build_before(args.before), "after": prereqs.build_loadgen()}
    except subprocess.CalledProcessError as exc:
        print(f"error: cannot build the generator at {args.before}: {exc}\nhint: a revision that has {SOURCE}",
              file=sys.stderr)  # fmt: skip
        return 2
    except prereqs.SetupError as exc:
        print(f"error: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    env = {"BENCH_STATIC_DIR": str(prereqs.write_static_file())}
    doc: dict[str, Any] = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [os.path.relpath(sys.argv[0], paths.REPO), *argv],
        "before": subprocess.run(["git", "rev-parse", args.before], cwd=paths.REPO, capture_output=True,
                                 text=True).stdout.strip(),  # fmt: skip
        "config": {"rate": args.rate, "connections": args.connections, "duration": args.duration,
                   "warmup": args.warmup, "rounds": args.rounds,
                   "servers": {k: [p, vars(s)] for k, (p, s) in args.config.items()}},  # fmt: skip
        "machine": machine.describe(None, prereqs.find_rustc()),
        "rows": [],
    }
    for r in range(args.rounds):
        for server in runner.rotated(chosen, r):
            doc["rows"] += measure(args, server, r, binaries, env)
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["medians"] = summarize(doc["rows"])
    out = args.out or paths.RESULTS_DIR / f"loadgen-ab-{doc['date']}.json"
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    for server, m in doc["medians"].items():
        for build in BUILDS:
            b = m[build]
            print(f"{server:<9} {build:<6} p50 {b['p50']} µs  p99 {b['p99']} µs  "
                  f"client {b['client_cpu_us_per_req']} · server {b['server_cpu_us_per_req']} CPU-µs/req")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    runner_python = paths.VENV_PYTHON
    if Path(sys.prefix).resolve() != paths.VENV.resolve() and runner_python.exists():
        os.execv(runner_python, [str(runner_python), *sys.argv])
    sys.exit(main(sys.argv[1:]))
