"""The HTTP/2 cell: h2c (prior knowledge) throughput and CPU per request, with h2load.

Each server that speaks HTTP/2 (uringapi and granian; uvicorn does not) serves the hello
app on a plain port with HTTP/2 only (`--http 2` for both), with the same `--workers`,
scheduling policy (batch when it is among the run's, as the blocking and WebSocket cells)
and gc freezing as the other cells, and its own HTTP/2 defaults. The HTTP config search
does not apply here.

Per round, per server (rotating order), per shape (1 and 8 connections, each with up to
100 concurrent streams), on a fresh server each: h2load (Debian's `nghttp2-client`, one
thread) for `--warmup` s, then h2load again for `--duration` s, measured. Throughput is
the requests that succeeded over h2load's own elapsed time; CPU is the server's whole
process tree (proctree.py) around the measured h2load run, per request that succeeded.
Readiness is one prior-knowledge request with curl, whose body is checked; h2load does
not read bodies, so a run whose DATA bytes are not that body's length per answer fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import blocking, machine, process, proctree, runner
from .cells import Cell, by_name
from .runner import Outcome, Plan, Row, fmt_num, median_of, rotated, say
from .servers import Server, Settings

CELL: Cell = by_name("hello")
SHAPES = (1, 8)
"""Connections per measurement; each carries up to STREAMS concurrent streams."""
STREAMS = 100
H2LOAD_THREADS = 1
"""One client thread, as wrk gets: on 2 cores a second would take CPU from the servers."""
SERVERS = ("uringapi", "granian")
"""The servers under test that speak HTTP/2 (uvicorn has no HTTP/2)."""
SCENARIO = "h2"
GUARD_S = 60.0
"""Extra seconds an h2load run may take past its duration before it is a failed run (hang guard)."""


@dataclass(frozen=True)
class H2Plan:
    h2load: str
    shapes: tuple[int, ...] = SHAPES
    streams: int = STREAMS


def cell_name(connections: int) -> str:
    return f"h2-c{connections}"


def run(plan: Plan, hp: H2Plan) -> Outcome:
    outcome = Outcome([], [])
    servers = [s for s in plan.servers if s.name in SERVERS and s.runs(CELL)]
    policy = blocking.policy(plan)
    for r in range(plan.rounds):
        for position, server in enumerate(rotated(servers, r)):
            for connections in hp.shapes:
                where = {"round": r + 1, "cell": cell_name(connections), "server": server.name,
                         "policy": policy, "position": position}  # fmt: skip
                runner.attempt(outcome, where, partial(_once, plan, hp, server, connections, r), _print)
    return outcome


def command(plan: Plan, server: Server, port: int) -> list[str]:
    """The server's command of the other cells with HTTP/2 only (h2c prior knowledge)."""
    return command_for(server, port, plan.settings, blocking.policy(plan))


def command_for(server: Server, port: int, settings: Settings, policy: str = "batch") -> list[str]:
    """`command` outside a full run (ab.py)."""
    cmd = server.command(CELL, port, settings, None, policy)
    if "--http" in cmd:  # granian's commands pin --http 1 for the HTTP/1.1 cells
        i = cmd.index("--http")
        return [*cmd[: i + 1], "2", *cmd[i + 2 :]]
    return [*cmd, "--http", "2"]


def _once(plan: Plan, hp: H2Plan, server: Server, connections: int, r: int) -> Row:
    port = process.free_port()
    log = plan.log_dir / f"r{r + 1}-{cell_name(connections)}-{server.name}.log"
    cmd = command(plan, server, port)
    url = f"http://127.0.0.1:{port}{CELL.path}"
    with process.running(cmd, CELL, port, log, {**plan.env, **server.env(CELL)}, probe=probe) as pid:
        _, body = probe(CELL, port)
        h2load(hp, url, connections, plan.warmup_s)
        before, times_before = proctree.snapshot(pid), machine.cpu_times()
        client_before = proctree.own_children_cpu_seconds()
        result = h2load(hp, url, connections, plan.duration_s)
        client_s = proctree.own_children_cpu_seconds() - client_before
        cpu, times_after = proctree.window(before, proctree.snapshot(pid)), machine.cpu_times()
    if not result["succeeded"]:
        raise process.ServerError(f"no request succeeded in {plan.duration_s} s: {result}")
    if result["data_bytes"] != result["succeeded"] * len(body):
        # h2load does not read bodies; the DATA bytes it counted must be the probed body's, per answer.
        raise process.ServerError(
            f"{result['data_bytes']:,} DATA bytes for {result['succeeded']:,} answers of {len(body)} bytes each"
        )
    return {
        "connections": connections,
        "streams": hp.streams,
        **result,
        "rps": round(result["succeeded"] / result["elapsed_s"], 1),
        "cpu_s": round(cpu.cpu_s, 3),
        "cpu_us_per_request": runner.per_request_us(cpu.cpu_s, result["succeeded"]),
        "cpu_by_process": cpu.by_process,
        "client_cpu_s": round(client_s, 3),
        **runner.machine_fields(times_before, times_after, cpu.cpu_s, client_s),
        "command": cmd,
    }


def h2load(hp: H2Plan, url: str, connections: int, seconds: int) -> Row:
    """One h2load run of `seconds` s; its counts and elapsed time."""
    cmd = [hp.h2load, "-t", str(H2LOAD_THREADS), "-c", str(connections), "-m", str(hp.streams),
           "-D", str(seconds), url]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + GUARD_S)
    except subprocess.TimeoutExpired as exc:
        raise process.ServerError(f"h2load did not finish within {seconds + GUARD_S:.0f} s") from exc
    if done.returncode != 0:
        raise process.ServerError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr.strip()[-2000:]}")
    return parse(done.stdout)


def parse(out: str) -> Row:
    """h2load's summary: elapsed time, request counts, 2xx and mean time per request."""
    finished = re.search(r"^finished in ([\d.]+)(s|ms),", out, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
        r"(\d+) timeout", out, re.M,
    )  # fmt: skip
    status = re.search(r"^status codes: (\d+) 2xx", out, re.M)
    data = re.search(r"^traffic: .*\((\d+)\) data", out, re.M)
    latency = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", out, re.M)
    if not (finished and counts and status and data):
        raise process.ServerError(f"cannot read h2load's output:\n{out.strip()[-2000:]}")
    elapsed = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    scale = {"us": 1, "ms": 1e3, "s": 1e6}
    return {
        "elapsed_s": elapsed,
        "total": int(counts[1]),
        "succeeded": int(counts[4]),
        "failed": int(counts[5]),
        "errored": int(counts[6]),
        "timeout": int(counts[7]),
        "status_2xx": int(status[1]),
        "data_bytes": int(data[1]),
        "mean_request_us": round(float(latency[1]) * scale[latency[2]], 1) if latency else None,
    }


def probe(cell: Cell, port: int) -> tuple[int, bytes]:
    """One HTTP/2 prior-knowledge request with curl; OSError while nothing listens."""
    curl = shutil.which("curl")
    if curl is None:
        raise process.ServerError("curl is not installed (the HTTP/2 cell's readiness check needs it)")
    cmd = [curl, "-s", "--http2-prior-knowledge", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
           f"http://127.0.0.1:{port}{cell.path}"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise ConnectionError(f"curl exited {done.returncode}")
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), body


def summarize(rows: list[Row]) -> dict[str, dict[str, Row]]:
    """{cell: {server: medians over rounds}}; failures summed."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["cell"], row["server"]), []).append(row)
    out: dict[str, dict[str, Row]] = {}
    for (cell, server), group in groups.items():
        m = {k: median_of(group, lambda r, k=k: r[k]) for k in ("rps", "cpu_us_per_request", "mean_request_us")}
        out.setdefault(cell, {})[server] = {
            "rounds": len(group),
            "policy": group[0]["policy"],
            "connections": group[0]["connections"],
            "streams": group[0]["streams"],
            **m,
            "not_ok_total": sum(r["failed"] + r["errored"] + r["timeout"] + r["succeeded"] - r["status_2xx"]
                                for r in group),
        }  # fmt: skip
    return out


def describe(plan: Plan, hp: H2Plan) -> dict[str, Any]:
    return {
        "app": CELL.target,
        "path": CELL.path,
        "workers": plan.settings.workers,
        "threads": plan.settings.threads,
        "policy": blocking.policy(plan),
        "shapes": list(hp.shapes),
        "streams": hp.streams,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "client": f"h2load ({_version(hp.h2load)}), {H2LOAD_THREADS} thread, h2c prior knowledge, "
        f"-c <connections> -m {hp.streams} -D <duration>",
        "server_flags": "--http 2 (uringapi and granian)",
    }


def cell(plan: Plan, h2load_path: str | None, skipped: str | None = None) -> dict[str, Any]:
    """The cell's part of the results document (session.py)."""
    if h2load_path is None:
        return {"skipped": skipped or "disabled with --no-h2"}
    if not any(s.name in SERVERS for s in plan.servers):
        return {"skipped": "no selected server speaks HTTP/2 (uringapi, granian)"}
    hp = H2Plan(h2load_path)
    shapes = " and ".join(f"{c}×{hp.streams}" for c in hp.shapes)
    say(f"http/2: h2load over {shapes} connections×streams, h2c prior knowledge, `{CELL.target}`")
    outcome = run(plan, hp)
    return {**describe(plan, hp), "rounds": outcome.rows, "failures": outcome.failures,
            "medians": summarize(outcome.rows)}  # fmt: skip


def _version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    return done.stdout.strip() or "unknown version"


def section(doc: dict[str, Any]) -> str | None:
    """The report's HTTP/2 table (report.markdown)."""
    h = doc.get("h2")
    if not h or not h.get("medians"):
        return None
    med = h["medians"]
    head = ["Server"]
    for c in h["shapes"]:
        head += [f"{c}×{h['streams']} req/s", f"{c}×{h['streams']} CPU-µs/req", f"{c}×{h['streams']} vs granian"]
    head.append("not 2xx / failed")
    lines = [
        f"HTTP/2 (h2c, prior knowledge): `{h['app']}` on {h['workers']} workers per server (uringapi: "
        f"{h['threads']} front-end thread(s)), under {h['policy']}, each server with `--http 2` and its "
        f"HTTP/2 defaults. {h['client']}: connections × concurrent streams per connection, "
        f"{h['duration_s']} s measured after {h['warmup_s']} s of warm-up; CPU is the server's whole "
        "process tree per request (median over rounds).",
        "",
        "| " + " | ".join(head) + " |",
        "|:--|" + "--:|" * (len(head) - 1),
    ]
    for server in runner.ordered_servers(s for by_server in med.values() for s in by_server):
        cells = [server]
        bad = 0
        for c in h["shapes"]:
            by_server = med.get(cell_name(c), {})
            m = by_server.get(server)
            base = by_server.get("granian")
            ratio = m and base and m["rps"] and base["rps"] and m["rps"] / base["rps"]
            cells += [fmt_num(m and m["rps"]), fmt_num(m and m["cpu_us_per_request"], 1),
                      "—" if not ratio else f"{ratio:.2f}×"]  # fmt: skip
            bad += m["not_ok_total"] if m else 0
        cells.append(f"{bad:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(doc: dict[str, Any]) -> list[str]:
    return runner.section_notes(doc.get("h2") or {}, "HTTP/2 cell")


def _print(row: Row) -> None:
    cpu = row["cpu_us_per_request"]
    say(f"round {row['round']} {row['cell']:<18} {row['server']:<10} {row['policy']:<5} "
        f"{row['rps']:>10,.0f} req/s  {'—' if cpu is None else f'{cpu:,.1f}':>7} CPU-µs/req  "
        f"{row['connections']}×{row['streams']} streams, failed {row['failed'] + row['errored']}")  # fmt: skip
