"""The idle-connections cell: memory per idle keep-alive connection.

Per server, per round: start it on the hello app, open and close a few hundred
connections (allocators warm), take the RSS of the whole process tree (front end or
master process and every worker: the sum of their VmRSS), then open
``--idle-connections`` connections that each send one request, read the whole answer
and stay open, idle; take the tree's RSS again. The cell's figure is the growth divided
by the connections held. Every server gets a keep-alive timeout longer than the cell
(uvicorn's default of 5 s would close the first connections before the last opened), and
granian a ``--backpressure`` that admits them all (by default it stops accepting past
backlog/workers open connections; a user would raise it with that one option).

A server that stops accepting or answering holds fewer connections: the row says how
many it held, and the figure is over those.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

from . import process, proctree, runner
from .cells import by_name
from .runner import Outcome, Plan, Row, median_of, rotated, say
from .servers import Server

CELL = by_name("hello")
DEFAULT_CONNECTIONS = 10_000
QUICK_CONNECTIONS = 1_000
WARM_CONNECTIONS = 200
BATCH = 100
"""Connections opened at once; each batch is answered before the next opens."""
GUARD_S = 20.0
"""A batch not answered by then ends the cell for that server (hang guard, not a speed claim)."""
KEEP_ALIVE_S = 600
SETTLE_S = 0.5
SCENARIO = "idle-connections"
POLICY = "other"
"""Scheduling does not matter for memory at rest: every server runs under SCHED_OTHER."""


def run(plan: Plan, connections: int) -> Outcome:
    _raise_nofile(connections)
    outcome = Outcome([], [])
    servers = [s for s in plan.servers if s.serves_apps and s.runs(CELL)]
    for r in range(plan.rounds):
        for position, server in enumerate(rotated(servers, r)):
            where = {"round": r + 1, "cell": SCENARIO, "server": server.name, "policy": POLICY, "position": position}
            runner.attempt(outcome, where, partial(_once, plan, server, r, connections), _print)
    return outcome


def _once(plan: Plan, server: Server, r: int, connections: int) -> Row:
    port, _ = runner.ports_for(server)
    log = plan.log_dir / f"r{r + 1}-{SCENARIO}-{server.name}.log"
    cmd = server.command(CELL, port, plan.settings, None, POLICY) + _idle_args(server, connections)
    with process.running(cmd, CELL, port, log, {**plan.env, **server.env(CELL)}) as pid:
        for s in _open_idle(port, WARM_CONNECTIONS):
            s.close()
        time.sleep(SETTLE_S)
        before = _tree_rss(pid)
        socks = _open_idle(port, connections)
        try:
            time.sleep(SETTLE_S)
            after = _tree_rss(pid)
            held = len(socks)
        finally:
            for s in socks:
                s.close()
    return {
        "connections": connections,
        "held": held,
        "rss_before": before["total"],
        "rss_after": after["total"],
        "per_connection_bytes": round((after["total"] - before["total"]) / held) if held else None,
        "rss_by_process": after["by_process"],
        "command": cmd,
    }


def _idle_args(server: Server, connections: int) -> list[str]:
    """Options that let each server hold the connections until the measurement is done."""
    if server.name in ("uringapi", "uvicorn"):
        return ["--timeout-keep-alive", str(KEEP_ALIVE_S)]
    if server.name == "granian" and "--backpressure" in server.help_text():
        return ["--backpressure", str(connections + WARM_CONNECTIONS)]
    return []


def _raise_nofile(connections: int) -> None:
    """This process holds the client ends and the server inherits the limit: both need room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 2 * WARM_CONNECTIONS + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def _tree_rss(pid: int) -> dict[str, Any]:
    by_process = []
    for stat in proctree.tree(pid):
        rss = _vm_rss(stat.pid)
        if rss is not None:
            by_process.append({"pid": stat.pid, "name": stat.name, "rss": rss})
    return {"total": sum(p["rss"] for p in by_process), "by_process": by_process}


def _vm_rss(pid: int) -> int | None:
    try:
        text = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def _open_idle(port: int, n: int) -> list[socket.socket]:
    """Up to n connections that each got one whole answer and now sit idle (keep-alive).
    Stops early (returning those that were answered) when a batch is not answered in time."""
    request = f"{CELL.method} {CELL.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    held: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for start in range(0, n, BATCH):
            pending: dict[socket.socket, bytes] = {}
            for _ in range(min(BATCH, n - start)):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
                    s.sendall(request)
                except OSError:
                    return held
                s.setblocking(False)
                pending[s] = b""
                sel.register(s, selectors.EVENT_READ)
            deadline = time.monotonic() + GUARD_S
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    got = pending[s] + data
                    if not data or _complete(got):
                        sel.unregister(s)
                        del pending[s]
                        if data:
                            held.append(s)
                        else:
                            s.close()
                        continue
                    pending[s] = got
            if pending:
                for s in pending:
                    sel.unregister(s)
                    s.close()
                return held
    finally:
        sel.close()
    return held


def _complete(got: bytes) -> bool:
    head, sep, body = got.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return body.endswith(b"0\r\n\r\n")  # chunked


def summarize(rows: list[Row]) -> dict[str, Row]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["server"], []).append(row)
    return {
        server: {
            "rounds": len(group),
            "connections": group[0]["connections"],
            "held_min": min(r["held"] for r in group),
            "rss_before": median_of(group, lambda r: r["rss_before"]),
            "rss_after": median_of(group, lambda r: r["rss_after"]),
            "per_connection_bytes": median_of(group, lambda r: r["per_connection_bytes"]),
        }
        for server, group in groups.items()
    }


def cell(plan: Plan, connections: int | None) -> dict[str, Any]:
    """The cell's part of the results document (session.py); `None`: skipped."""
    if connections is None:
        return {"skipped": "disabled with --no-idle"}
    say(f"idle connections: {connections:,} idle keep-alive connections per server, RSS of its process tree")
    outcome = run(plan, connections)
    return {**describe(connections), "rounds": outcome.rows, "failures": outcome.failures,
            "medians": summarize(outcome.rows)}


def describe(connections: int) -> dict[str, Any]:
    return {
        "app": CELL.target,
        "path": CELL.path,
        "connections": connections,
        "keep_alive_s": KEEP_ALIVE_S,
        "rss": "the sum of VmRSS of its front end or master process and every worker",
    }


def section(doc: dict[str, Any]) -> str | None:
    """The report's table for this cell (report.py calls it)."""
    idle = doc.get("idle")
    if not idle or not idle.get("medians"):
        return None
    lines = [
        f"Idle connections: {idle['connections']:,} keep-alive connections to `{idle['app']}`, each after one "
        f"answered request, held idle; growth of the server's RSS ({idle['rss']}) over the same server just "
        "before they opened, per connection held (median over rounds; lower is better):",
        "",
        "| Server | held | RSS before | RSS with them | per connection |",
        "|:--|--:|--:|--:|--:|",
    ]
    for server, m in sorted(idle["medians"].items(), key=lambda kv: kv[1]["per_connection_bytes"] or 1e18):
        per = m["per_connection_bytes"]
        lines.append(
            f"| {server} | {m['held_min']:,} | {_mib(m['rss_before'])} | {_mib(m['rss_after'])} | "
            f"{'—' if per is None else f'{per / 1024:.1f} KiB'} |"
        )
    return "\n".join(lines)


def _mib(n: float | None) -> str:
    return "—" if n is None else f"{n / (1 << 20):.1f} MiB"


def _print(row: Row) -> None:
    per = row["per_connection_bytes"]
    say(
        f"round {row['round']} {SCENARIO:<18} {row['server']:<10} held {row['held']:,}/{row['connections']:,}  "
        f"RSS {_mib(row['rss_before'])} -> {_mib(row['rss_after'])}  "
        + ("" if per is None else f"{per / 1024:.2f} KiB per connection")
    )
