"""The WebSocket cell: echo throughput and the memory of idle WebSockets.

`apps/ws_echo_asgi.py` (plain ASGI) sends every message back. Every server runs it with
the same `--workers`, under one scheduling policy (batch when it is among the run's, as
the blocking scenario), with gc frozen alike (uringapi's own, gc_frozen.py for the peers).
The HTTP config search does not apply here (its knobs were chosen for HTTP); each peer gets
a search of its own before the rounds (`search_peers`, unless `--no-search`): the same
search as search.py (`search.descend`), scored by 64 B echo msgs/s over `--probe-duration` s,
over granian's `--workers` 1..N by `--runtime-threads` 1|2 (every pair), and uvicorn's
`--workers` 1..N and
`--ws` (its default, the `websockets` backend, and `wsproto` when installed). The rounds
then run each peer at its best config, printed and kept in the JSON ("search"); uringapi
runs at the run's `--workers`/`--threads`.

Per round, per server (rotating order), on a fresh server each:

1. echo, once per message size (64 B and 16 KiB, binary): `--ws-connections` WebSockets in
   a closed loop (loadgen/ws_echo.rs, a std-only Rust client, one epoll loop for all of them),
   warm-up, then a measured window of `--duration` s: round trips per second, and the
   server's CPU (its whole process tree, proctree.py) per message;
2. idle memory: the server's RSS (summed over its process tree) after one WebSocket has
   been opened, echoed and closed (so each server has loaded its WebSocket code), then
   with `--ws-idle` WebSockets open, each having echoed one 16-byte message; the
   difference is what the idle WebSockets cost.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from . import blocking, machine, prereqs, process, proctree, runner, search, wsload
from .cells import Cell
from .runner import Outcome, Plan, Row, fmt_num, median_of, rotated, say
from .servers import Server

APP = "ws_echo_asgi:app"
CELL = Cell("websocket", "websocket", APP, "/", expect_contains=b"ws echo")
SIZES = (64, 16 * 1024)
ECHO_PROCESSES = 2
"""Client processes for the echo load (one per core of the 2-core machine)."""
IDLE_PROCESSES = 4
SETTLE_S = 1.0
"""Pause before reading memory, so that buffers freed after the handshakes are returned."""
SCENARIO = "websocket"


@dataclass(frozen=True)
class WsPlan:
    connections: int
    idle: int
    sizes: tuple[int, ...] = SIZES
    client: str = "rust"
    """Echo load: "rust" (loadgen/ws_echo.rs, the cell's) or "python" (wsload.echo, to cross-check)."""
    configs: dict[str, search.Config] = field(default_factory=dict)
    """Per server, the config the search chose (`search_peers`); none: the run's settings."""


def label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def echo_cell(size: int) -> str:
    return f"ws-echo-{size}"


IDLE_CELL = "ws-idle"


def run(plan: Plan, wp: WsPlan) -> Outcome:
    outcome = Outcome([], [])
    servers = [s for s in plan.servers if s.runs(CELL)]
    policy = blocking.policy(plan)
    for r in range(plan.rounds):
        for position, server in enumerate(rotated(servers, r)):
            base = {"round": r + 1, "server": server.name, "policy": policy, "position": position}
            for size in wp.sizes:
                where = {**base, "cell": echo_cell(size)}
                runner.attempt(outcome, where, partial(_echo_measured, plan, wp, server, size, r), _print_echo)
            where = {**base, "cell": IDLE_CELL}
            runner.attempt(outcome, where, partial(_idle_once, plan, wp, server, r), _print_idle)
    return outcome


def _start(plan: Plan, server: Server, name: str, r: int, wp: WsPlan | None = None):
    port = process.free_port()
    log = plan.log_dir / f"r{r + 1}-{name}-{server.name}.log"
    settings = search.settings_for(plan.settings, (wp.configs if wp else {}).get(server.name, {}))
    cmd = server.command(CELL, port, settings, None, blocking.policy(plan))
    return cmd, port, process.running(cmd, CELL, port, log, {**plan.env, **server.env(CELL)})


PROBE_WARMUP_S = 0.5
"""Echo before each search probe's window, at most (the server has started and answered
already); none when the run's --probe-warmup is 0."""


def ws_knobs(server: Server, base_workers: int, cpus: int, help_text: str) -> list[tuple[str, list[Any]]]:
    """The WebSocket knobs searched for a peer, the default value first; none for uringapi
    (it runs at the run's settings, the figure it is compared by)."""
    if server.name not in ("granian", "uvicorn"):
        return []
    span = range(1, max(1, cpus) + 1)
    out: list[tuple[str, list[Any]]] = [("workers", [base_workers, *[n for n in span if n != base_workers]])]
    if server.name == "granian" and "--runtime-threads" in help_text:
        out.append(("--runtime-threads", [None, "2"]))  # None: granian's default, 1
    if server.name == "uvicorn" and "--ws" in help_text and importlib.util.find_spec("wsproto") is not None:
        out.append(("--ws", [None, "wsproto"]))  # None: uvicorn's auto, the websockets backend
    return out


def search_peers(plan: Plan, wp: WsPlan, probe_s: float, warmup_s: float) -> tuple[WsPlan, dict[str, Any]]:
    """Each peer's best WebSocket config (module docstring), printed; the plan to run with
    them and, per server, {"config", "msgs_per_s", "probes"} for the JSON."""
    policy = blocking.policy(plan)
    found: dict[str, Any] = {}
    configs = dict(wp.configs)
    for server in plan.servers:
        if not server.runs(CELL):
            continue
        dims = ws_knobs(server, plan.settings.workers, search.SearchPlan(probe_s=1).cpus, server.help_text())
        if not dims:
            continue
        # granian's workers and runtime threads together (one worker with two threads can
        # beat two workers, as in the h2 cell's search); the rest one at a time.
        result = search.descend(dims, partial(_probe, plan, wp, server, policy, probe_s, min(warmup_s, PROBE_WARMUP_S)),
                                grid=frozenset({"workers", "--runtime-threads"}))
        configs[server.name] = result["config"]
        found[server.name] = {"config": result["config"], "msgs_per_s": result["rps"], "probes": result["probes"]}
        rate = "failed" if result["rps"] is None else f"{result['rps']:,.0f} msgs/s"
        say(f"config {echo_cell(wp.sizes[0]):<18} {server.name:<10} {policy:<5} {search.describe(result['config'])} "
            f"({rate} in {len(result['probes'])} probes)")
    return replace(wp, configs=configs), found


def _probe(plan: Plan, wp: WsPlan, server: Server, policy: str, probe_s: float, warmup_s: float,
           config: search.Config,
           probes: list[dict[str, Any]]) -> float | None:
    """One search probe: a fresh server at `config`, 64 B echo over the cell's connections."""
    settings = search.settings_for(plan.settings, config)
    port = process.free_port()
    log = plan.log_dir / f"search-websocket-{server.name}-{policy}-{len(probes)}.log"
    cmd = server.command(CELL, port, settings, None, policy)
    try:
        with process.running(cmd, CELL, port, log, {**plan.env, **server.env(CELL)}):
            result = wsload.echo_rust(prereqs.build_ws_echo(), port, wp.connections, wp.sizes[0], warmup_s,
                                      probe_s, lambda _edge: None)
    except (process.ServerError, wsload.LoadError, OSError) as exc:
        probes.append({"config": config, "msgs_per_s": None, "error": str(exc).splitlines()[0] if str(exc) else "?"})
        return None
    rate = round(result.messages / result.window_s, 1)
    probes.append({"config": config, "msgs_per_s": rate, "errors": result.errors})
    return rate if result.messages > 0 else None


def _echo_measured(plan: Plan, wp: WsPlan, server: Server, size: int, r: int) -> Row:
    """One echo run on a fresh server; once more if its window showed no server CPU at all.

    A server that echoed messages used CPU; seeing none means the window was too short for
    /proc's clock-tick accounting (10 ms per process) or the harness missed it (its own
    snapshots delayed on a busy machine). Such a row would report 0 CPU-µs/msg, which is
    wrong, so the run is repeated once and the row says why; a second miss is kept as
    measured (no CPU figure) and its window length is in the row for diagnosis.
    """
    row = _echo_once(plan, wp, server, size, r)
    if row["cpu_s"] > 0:
        return row
    say(f"  {server.name} {echo_cell(size)}: no server CPU seen in a {row['snapshot_window_s']} s window "
        f"({row['messages']} messages); measuring once more")
    again = _echo_once(plan, wp, server, size, r)
    again["repeated_because"] = f"first window showed no server CPU ({row['messages']} messages)"
    return again


def _echo_once(plan: Plan, wp: WsPlan, server: Server, size: int, r: int) -> Row:
    cmd, port, running = _start(plan, server, echo_cell(size), r, wp)
    marks: dict[str, Any] = {}
    with running as pid:
        def on_window(edge: str) -> None:
            marks[edge] = (proctree.snapshot(pid), machine.cpu_times(), time.monotonic())

        if wp.client == "python":
            result = wsload.echo(f"ws://127.0.0.1:{port}/", wp.connections, size, plan.warmup_s,
                                 plan.duration_s, ECHO_PROCESSES, on_window)
        else:
            result = wsload.echo_rust(prereqs.build_ws_echo(), port, wp.connections, size, plan.warmup_s,
                                      plan.duration_s, on_window)
    (before, times_before, t0), (after, times_after, t1) = marks["start"], marks["end"]
    cpu = proctree.window(before, after)
    if result.messages == 0:
        raise process.ServerError(f"no echo completed in {plan.duration_s} s ({result.errors} errors)")
    return {
        "size": size,
        "connections": wp.connections,
        "messages": result.messages,
        "msgs_per_s": round(result.messages / result.window_s, 1),
        "errors": result.errors,
        "cpu_s": round(cpu.cpu_s, 3),
        # The client counts messages over its own window; the CPU snapshots bracket a
        # window of their own, which on a loaded machine starts late (by up to 0.2 s of 1 s
        # seen here): CPU per second of snapshot window over messages per second of client
        # window, so neither length skews the figure.
        "cpu_us_per_msg": _per_msg_us(cpu.cpu_s, t1 - t0, result.messages, result.window_s),
        "snapshot_window_s": round(t1 - t0, 3),
        "cpu_by_process": cpu.by_process,
        "client_cpu_s": result.client_cpu_s,
        **runner.machine_fields(times_before, times_after, cpu.cpu_s, result.client_cpu_s),
        "command": cmd,
    }


def _per_msg_us(cpu_s: float, cpu_window_s: float, messages: int, window_s: float) -> float | None:
    if cpu_s <= 0 or cpu_window_s <= 0 or messages <= 0:
        return None
    return round(cpu_s / cpu_window_s * 1e6 / (messages / window_s), 2)


def tree_rss_bytes(pid: int) -> int:
    """VmRSS summed over the server's process tree (shared pages count once per process)."""
    total = 0
    for stat in proctree.tree(pid):
        try:
            status = Path(f"/proc/{stat.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _idle_once(plan: Plan, wp: WsPlan, server: Server, r: int) -> Row:
    cmd, port, running = _start(plan, server, IDLE_CELL, r, wp)
    url = f"ws://127.0.0.1:{port}/"
    with running as pid:
        wsload.idle(url, 1, 1, dict)  # loads each server's WebSocket code before the baseline
        time.sleep(SETTLE_S)
        idle_rss = tree_rss_bytes(pid)

        def measure() -> dict:
            time.sleep(SETTLE_S)
            return {"rss_open_bytes": tree_rss_bytes(pid)}

        got = wsload.idle(url, wp.idle, IDLE_PROCESSES, measure)
    delta = got["rss_open_bytes"] - idle_rss
    return {
        "idle_connections": wp.idle,
        "open": got["open"],
        "failed": got["failed"],
        "rss_idle_mib": round(idle_rss / 2**20, 1),
        "rss_open_mib": round(got["rss_open_bytes"] / 2**20, 1),
        "rss_delta_mib": round(delta / 2**20, 1),
        "kib_per_connection": round(delta / 1024 / max(1, got["open"]), 2),
        "command": cmd,
    }


def summarize(rows: list[Row]) -> dict[str, dict[str, Row]]:
    """{cell: {server: medians over rounds}}; errors are summed."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["cell"], row["server"]), []).append(row)
    out: dict[str, dict[str, Row]] = {}
    for (cell, server), group in groups.items():
        if cell == IDLE_CELL:
            m = {k: median_of(group, lambda r, k=k: r[k])
                 for k in ("rss_idle_mib", "rss_open_mib", "rss_delta_mib", "kib_per_connection")}
            m["failed_total"] = sum(r["failed"] for r in group)
        else:
            m = {k: median_of(group, lambda r, k=k: r[k]) for k in ("msgs_per_s", "cpu_us_per_msg")}
            m["errors_total"] = sum(r["errors"] for r in group)
            m["size"] = group[0]["size"]
        out.setdefault(cell, {})[server] = {"rounds": len(group), "policy": group[0]["policy"], **m}
    return out


def describe(plan: Plan, wp: WsPlan) -> dict[str, Any]:
    return {
        "app": APP,
        "workers": plan.settings.workers,
        "threads": plan.settings.threads,
        "policy": blocking.policy(plan),
        "connections": wp.connections,
        "sizes": list(wp.sizes),
        "idle_connections": wp.idle,
        "configs": {name: search.describe(c) for name, c in wp.configs.items()},
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "client": ("benches/e2e/loadgen/ws_echo.rs (std-only Rust, one epoll loop for all WebSockets) for echo"
                   if wp.client == "rust" else
                   f"benches/e2e/benchkit/wsload.py: websockets on uvloop, {ECHO_PROCESSES} processes for echo")
        + f"; wsload.py ({IDLE_PROCESSES} processes) for idle; binary messages; no permessage-deflate offered",
    }


def section(doc: dict[str, Any]) -> str | None:
    """The report's WebSocket table (report.markdown)."""
    w = doc.get("websocket")
    if not w or not w.get("medians"):
        return None
    med = w["medians"]
    sizes = w["sizes"]
    head = ["Server"]
    for size in sizes:
        head += [f"{label(size)} msgs/s", f"{label(size)} CPU-µs/msg"]
    head += [f"{w['idle_connections']:,} idle: MiB over idle", "KiB each", "errors"]
    lines = [
        f"WebSocket echo: `{w['app']}` on {w['workers']} workers per server (uringapi: {w['threads']} "
        f"front-end thread(s)), under {w['policy']}, "
        + (f"peers at their best config from the WebSocket search ({_configs(w['configs'])}). "
           if w.get("configs") else "each server's WebSocket defaults. ")
        + f"{w['connections']} WebSockets in a closed loop (send one binary message, wait for its "
        f"echo) for {w['duration_s']} s; CPU is the server's whole process tree per message. "
        f"Idle: the server's RSS with {w['idle_connections']:,} open WebSockets minus its RSS "
        "after one WebSocket came and went.",
        "",
        "| " + " | ".join(head) + " |",
        "|:--|" + "--:|" * (len(head) - 1),
    ]
    for server in runner.ordered_servers(s for cell in med.values() for s in cell):
        cells = [server]
        errors = 0
        for size in sizes:
            m = med.get(echo_cell(size), {}).get(server)
            cells += [fmt_num(m and m["msgs_per_s"]), _cpu(m and m["cpu_us_per_msg"])]
            errors += m["errors_total"] if m else 0
        idle = med.get(IDLE_CELL, {}).get(server)
        cells += [fmt_num(idle and idle["rss_delta_mib"], 1), fmt_num(idle and idle["kib_per_connection"], 1)]
        errors += idle["failed_total"] if idle else 0
        cells.append(f"{errors:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> list[str]:
    return runner.section_notes(doc.get("websocket") or {}, "WebSocket cell")


def _configs(configs: dict[str, str]) -> str:
    return "; ".join(f"{name}: {config}" for name, config in configs.items())


def _cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _print_echo(row: Row) -> None:
    say(f"round {row['round']} {row['cell']:<18} {row['server']:<10} {row['policy']:<5} "
        f"{row['msgs_per_s']:>10,.0f} msgs/s  {_cpu(row['cpu_us_per_msg']):>7} CPU-µs/msg  "
        f"errors {row['errors']}")


def _print_idle(row: Row) -> None:
    say(f"round {row['round']} {row['cell']:<18} {row['server']:<10} {row['policy']:<5} "
        f"{row['open']:,} idle WebSockets: +{row['rss_delta_mib']:,.1f} MiB "
        f"({row['kib_per_connection']:.1f} KiB each; idle server {row['rss_idle_mib']:,.1f} MiB)")
