"""The HTTP/2 cell: h2c (prior knowledge) throughput and CPU per request, with h2load.

Each server that speaks HTTP/2 (uringapi and granian; uvicorn does not) serves the hello
app on a plain port with HTTP/2 only (`--http 2` for both), under one scheduling policy
(batch when it is among the run's, as the blocking and WebSocket cells) and with gc frozen
alike, each at its best config for each shape: before the rounds a config search (unless
`--no-search`) probes every server with h2load for `--probe-duration` s per config, over
workers 1..N × front-end threads 1..N for uringapi, and workers 1..N × `--runtime-threads`
1|2 for granian, then granian's `--runtime-mode mt` and `--backpressure 256` one at a time
(`search.descend`); the HTTP/1.1 cells' choices do not carry over (granian's best HTTP/2
config is one worker with two runtime threads over one connection, two workers over 8).

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
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from . import blocking, machine, process, proctree, runner, search
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


SEARCH_OPTIONS = {"granian": (("--runtime-threads", (None, "2")), ("--runtime-mode", (None, "mt")),
                               ("--backpressure", (None, "256")))}  # fmt: skip
"""Options the HTTP/2 search tries besides workers and threads (granian's runtime threads
default to 1, its mode to auto; 64 in-flight requests per worker is the HTTP/1.1 search's
other backpressure and no use against 800 streams)."""
SEARCH_GRID = frozenset({"workers", "threads", "--runtime-threads"})
"""Knobs tried in every combination (search.descend)."""


@dataclass(frozen=True)
class H2Plan:
    h2load: str
    shapes: tuple[int, ...] = SHAPES
    streams: int = STREAMS
    probe_s: int | None = None
    """Seconds of h2load per config-search probe; None: no search (every server at
    `--workers`/`--threads` and its HTTP/2 defaults)."""
    probe_warmup_s: int = 1
    """Seconds of h2load before each probe's measured ones (none when 0)."""
    configs: dict[int, dict[str, search.Config]] | None = None
    """{connections: {server: config}} found by the search."""

    def settings(self, plan: Plan, server: Server, connections: int) -> Settings:
        config = (self.configs or {}).get(connections, {}).get(server.name, {})
        return search.settings_for(plan.settings, config)


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


def search_configs(plan: Plan, hp: H2Plan, servers: list[Server]) -> dict[int, dict[str, dict[str, Any]]]:
    """{connections: {server: search result}}: each server's best config per shape."""
    assert hp.probe_s is not None
    cpus = search.SearchPlan(probe_s=hp.probe_s).cpus
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for connections in hp.shapes:
        for server in servers:
            dims = search.knobs(replace(server, options=SEARCH_OPTIONS.get(server.name, ())), plan.settings, cpus,
                                server.help_text())  # fmt: skip
            result = search.descend(dims, partial(_probe, plan, hp, server, connections), SEARCH_GRID)
            found.setdefault(connections, {})[server.name] = result
            rps = "failed" if result["rps"] is None else f"{result['rps']:,.0f} req/s"
            say(f"config {cell_name(connections):<18} {server.name:<10} {blocking.policy(plan):<5} "
                f"{search.describe(result['config'])} ({rps} in {len(result['probes'])} probes)")  # fmt: skip
    return found


def _probe(plan: Plan, hp: H2Plan, server: Server, connections: int, config: search.Config,
           probes: list[dict[str, Any]]) -> float | None:  # fmt: skip
    port = process.free_port()
    log = plan.log_dir / f"search-{cell_name(connections)}-{server.name}-{len(probes)}.log"
    cmd = command_for(server, port, search.settings_for(plan.settings, config), blocking.policy(plan))
    url = f"http://127.0.0.1:{port}{CELL.path}"
    assert hp.probe_s is not None
    try:
        with process.running(cmd, CELL, port, log, {**plan.env, **server.env(CELL)}, probe=probe):
            if hp.probe_warmup_s:
                h2load(hp, url, connections, hp.probe_warmup_s)
            result = h2load(hp, url, connections, hp.probe_s)
    except (process.ServerError, OSError) as exc:
        probes.append({"config": config, "rps": None, "error": str(exc).splitlines()[0] if str(exc) else "?"})
        return None
    rps = round(result["succeeded"] / result["elapsed_s"], 1) if result["elapsed_s"] else 0.0
    probes.append({"config": config, "rps": rps, "not_ok": not_ok(result)})
    return rps if not_ok(result) == 0 else None


def command(plan: Plan, hp: H2Plan, server: Server, port: int, connections: int) -> list[str]:
    """The server's command of the other cells with HTTP/2 only (h2c prior knowledge), at the
    config the search found for this shape."""
    return command_for(server, port, hp.settings(plan, server, connections), blocking.policy(plan))


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
    cmd = command(plan, hp, server, port, connections)
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
        "config": (hp.configs or {}).get(connections, {}).get(server.name, {}),
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


def not_ok(result: Row) -> int:
    """Requests of one h2load run that did not come back as a complete 2xx answer. h2load
    counts a status code when it reads the HEADERS, so a run can show one 2xx more than
    requests succeeded (a response that began as the run ended): that is not a failure, and
    must not make the count negative."""
    missing = result["total"] - result["succeeded"]
    not_2xx = max(0, result["succeeded"] - result["status_2xx"])
    return missing + not_2xx + result["failed"] + result["errored"] + result["timeout"]


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
            "config": group[0].get("config", {}),
            "connections": group[0]["connections"],
            "streams": group[0]["streams"],
            **m,
            "not_ok_total": sum(not_ok(r) for r in group),
        }  # fmt: skip
    return out


def describe(plan: Plan, hp: H2Plan) -> dict[str, Any]:
    return {
        "search": hp.probe_s is not None,
        "probe_s": hp.probe_s,
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


def cell(plan: Plan, h2load_path: str | None, skipped: str | None = None,
         probe_s: int | None = None, probe_warmup_s: int = 1) -> dict[str, Any]:  # fmt: skip
    """The cell's part of the results document (session.py); `probe_s` None: no config search."""
    if h2load_path is None:
        return {"skipped": skipped or "disabled with --no-h2"}
    servers = [s for s in plan.servers if s.name in SERVERS and s.runs(CELL)]
    if not servers:
        return {"skipped": "no selected server speaks HTTP/2 (uringapi, granian)"}
    hp = H2Plan(h2load_path, probe_s=probe_s, probe_warmup_s=probe_warmup_s)
    shapes = " and ".join(f"{c}×{hp.streams}" for c in hp.shapes)
    say(f"http/2: h2load over {shapes} connections×streams, h2c prior knowledge, `{CELL.target}`")
    found: dict[int, dict[str, dict[str, Any]]] = {}
    if probe_s is not None:
        say(f"http/2 config search: {probe_s} s h2load probes per config")
        found = search_configs(plan, hp, servers)
        hp = replace(hp, configs={c: {n: r["config"] for n, r in by.items()} for c, by in found.items()})
    outcome = run(plan, hp)
    return {**describe(plan, hp), "rounds": outcome.rows, "failures": outcome.failures,
            "medians": summarize(outcome.rows),
            "search_results": {cell_name(c): by for c, by in found.items()}}  # fmt: skip


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
    if h.get("search"):
        given = (f"each server with `--http 2` at the best config of its h2load probes ({h['probe_s']} s each) "
                 "per shape, listed below the table")  # fmt: skip
    else:
        given = (f"on {h['workers']} workers per server (uringapi: {h['threads']} front-end thread(s)), each "
                 "with `--http 2` and its HTTP/2 defaults")  # fmt: skip
    lines = [
        f"HTTP/2 (h2c, prior knowledge): `{h['app']}` under {h['policy']}, {given}. {h['client']}: connections "
        f"× concurrent streams per connection, {h['duration_s']} s measured after {h['warmup_s']} s of "
        "warm-up; CPU is the server's whole process tree per request (median over rounds).",
        "",
        "| " + " | ".join(head) + " |",
        "|:--|" + "--:|" * (len(head) - 1),
    ]
    # Counted from the raw rounds (files written before `not_ok` could show -1).
    bad_by_server: dict[str, int] = {}
    for row in h.get("rounds", []):
        bad_by_server[row["server"]] = bad_by_server.get(row["server"], 0) + not_ok(row)
    for server in runner.ordered_servers(s for by_server in med.values() for s in by_server):
        cells = [server]
        for c in h["shapes"]:
            by_server = med.get(cell_name(c), {})
            m = by_server.get(server)
            base = by_server.get("granian")
            ratio = m and base and m["rps"] and base["rps"] and m["rps"] / base["rps"]
            cells += [fmt_num(m and m["rps"]), fmt_num(m and m["cpu_us_per_request"], 1),
                      "—" if not ratio else f"{ratio:.2f}×"]  # fmt: skip
        cells.append(f"{bad_by_server.get(server, 0):,}")
        lines.append("| " + " | ".join(cells) + " |")
    found = h.get("search_results") or {}
    if found:
        lines += ["", "| Shape | Server | Config | probes | best probe req/s |", "|:--|:--|:--|--:|--:|"]
        for c in h["shapes"]:
            for server, result in (found.get(cell_name(c)) or {}).items():
                best = "failed" if result["rps"] is None else fmt_num(result["rps"])
                lines.append(f"| {c}×{h['streams']} | {server} | {_config_text(result['config'])} | "
                             f"{len(result['probes'])} | {best} |")  # fmt: skip
    return "\n".join(lines)


def _config_text(config: dict[str, Any]) -> str:
    parts = [f"workers {config['workers']}"] if "workers" in config else []
    parts += [f"threads {config['threads']}"] if "threads" in config else []
    parts += [f"`{k} {v}`" for k, v in config.items() if k.startswith("--") and v is not None]
    return ", ".join(parts) or "defaults"


def notes(doc: dict[str, Any]) -> list[str]:
    return runner.section_notes(doc.get("h2") or {}, "HTTP/2 cell")


def _print(row: Row) -> None:
    cpu = row["cpu_us_per_request"]
    say(f"round {row['round']} {row['cell']:<18} {row['server']:<10} {row['policy']:<5} "
        f"{row['rps']:>10,.0f} req/s  {'—' if cpu is None else f'{cpu:,.1f}':>7} CPU-µs/req  "
        f"{row['connections']}×{row['streams']} streams, failed {row['failed'] + row['errored']}")  # fmt: skip
