"""The WebSocket echo cell alone, side by side: the same runs as `run.py`'s WebSocket cell
(benchkit/websocket.py: `ws_echo_asgi:app`, 2 workers, batch scheduling, 64 WebSockets in
a closed loop, loadgen/ws_echo.rs by default) for the servers in rotating order per round, without
the rest of the benchmark. For iterating on the message path and for the README's WebSocket
figures.

    .venv/bin/python benches/e2e/ws_echo.py --rounds 3 --duration 5 --out benches/results/ws-DATE.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
from pathlib import Path

from benchkit import machine, paths, prereqs, runner, servers, websocket
from benchkit.servers import Settings
from benchkit.wrk import LoadShape


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="uringapi,granian,uvicorn")
    p.add_argument("--sizes", default="64,16384", help="message sizes in bytes (comma list)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="measured seconds per run")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--client", choices=("rust", "python"), default="rust",
                   help="echo load: loadgen/ws_echo.rs (default) or the websockets client (cross-check)")
    p.add_argument("--out", type=Path, help="write the rows and medians here (JSON)")
    args = p.parse_args()
    started = dt.datetime.now().astimezone()
    chosen = servers.select(args.servers.split(","))
    sizes = tuple(int(s) for s in args.sizes.split(","))
    plan = runner.Plan(
        cells=[], servers=chosen, settings=Settings(workers=2, threads=1), rounds=args.rounds,
        duration_s=args.duration, warmup_s=args.warmup, shape=LoadShape(threads=1, connections=64), wrk="",
        env={}, log_dir=paths.WORK_DIR / "logs" / started.strftime("ws-%Y%m%d-%H%M%S"), fixed_rate=None,
    )
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    wp = websocket.WsPlan(args.connections, 0, sizes, args.client)
    rows: list[runner.Row] = []
    for r in range(args.rounds):
        for position, server in enumerate(runner.rotated(chosen, r)):
            for size in sizes:
                row = websocket._echo_once(plan, wp, server, size, r)
                row.update(round=r + 1, server=server.name, policy="batch", position=position,
                           cell=websocket.echo_cell(size))
                client_us = row["client_cpu_s"] / max(1, row["messages"]) * 1e6
                runner.say(f"round {r + 1} {server.name:<9} {websocket.label(size):>6} {row['msgs_per_s']:>9,.0f} "
                           f"msgs/s {row['cpu_us_per_msg']:>6.1f} server CPU-µs/msg (client {client_us:.1f}; "
                           f"other load {row['other_cpu_share']:.0%})")
                rows.append(row)
    medians = websocket.summarize(rows)
    for cell, by_server in medians.items():
        for name, m in by_server.items():
            runner.say(f"median {cell:<14} {name:<9} {m['msgs_per_s']:>9,.0f} msgs/s {m['cpu_us_per_msg']:>6.1f} CPU-µs/msg")
    doc = {
        "date": started.date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine.describe(None, prereqs.find_rustc()),
        "servers": {s.name: s.version() for s in chosen},
        "websocket": {**websocket.describe(plan, wp), "rounds": rows, "medians": medians},
        "other_load_share_median": statistics.median(r["other_cpu_share"] for r in rows),
    }
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        runner.say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
