"""The README's measured tables outside the bench section, each a pure function of one
committed raw file under benches/results/ (`benches/e2e/tables.py` writes the files and
regenerates the tables):

- `microseconds` ("Where the microseconds go"): uringapi's CPU per request split into its
  front-end process and its workers, per scheduling policy, from a results file of
  `run.py` (every round's `cpu_by_process`).
- `criterion` ("Micro-benchmarks"): the criterion benches of `benches/benches/`, from the
  estimates and samples criterion wrote.
- `worker-cpu`: the worker's CPU per request without sockets, from the rounds that
  `cargo bench --bench worker_cpu -- --json PATH` wrote.
- `websocket` (the WebSocket section's echo table): medians and round ranges from a
  results file of `ws_echo.py --out` (the bench's WebSocket cell alone).

Each section sits between `<!-- NAME:start -->` and `<!-- NAME:end -->` in README.md and
ends with the path of its raw file, which is how a regeneration finds it.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import paths

Doc = dict[str, Any]
RAW_LINE = re.compile(r"raw figures: `([^`]+\.json)`", re.IGNORECASE)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


# --- "Where the microseconds go" -------------------------------------------------

MICRO_CELLS = (("hello", "hello"), ("fastapi-json", "FastAPI `/json`"))
POLICY_ROWS = (("other", "`--sched normal` (SCHED_OTHER)"), ("batch", "`--sched batch` (default)"))


def microseconds_rows(doc: Doc) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(cell, policy): per round {front_us, workers_us, doorbells}} of uringapi's rounds.
    The front end is the server's own process (supervisor and front-end threads: the root
    of the tree, named uringapi); the workers are every other process in the tree."""
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    for row in doc["rounds"]:
        if row["server"] != "uringapi" or not row.get("requests"):
            continue
        procs = row["cpu_by_process"]
        front = sum(p["cpu_s"] for p in procs if p["name"] == "uringapi")
        workers = sum(p["cpu_s"] for p in procs if p["name"] != "uringapi")
        figures = {
            "front_us": front * 1e6 / row["requests"],
            "workers_us": workers * 1e6 / row["requests"],
            "rps": row["rps"],
        }
        if row.get("doorbells_per_request") is not None:
            figures["doorbells"] = row["doorbells_per_request"]
        out.setdefault((row["cell"], row["policy"]), []).append(figures)
    return out


def microseconds_section(doc: Doc, raw: Path) -> str:
    by = microseconds_rows(doc)
    c, m = doc["config"], doc["machine"]
    rounds = max((len(v) for v in by.values()), default=0)
    head = ["uringapi"]
    for _, label in MICRO_CELLS:
        head += [f"front end, {label}", f"workers, {label}", f"doorbells/req, {label}"]
    lines = [
        f"uringapi's CPU-µs per request, split between its own process (supervisor and front-end "
        f"thread) and its {c['workers']} workers, and its doorbells per request: the range over "
        f"{rounds} rounds of {c['duration_s']} s (after {c['warmup_s']} s of warm-up), wrk with "
        f"{c['connections']} connections on the same CPUs, {doc['date']}, {machine_note(m)}{_noise(doc)}.",
        "",
        "| " + " | ".join(head) + " |",
        "| --- |" + " --: |" * (len(head) - 1),
    ]
    for policy, label in POLICY_ROWS:
        cells = [label]
        for cell, _ in MICRO_CELLS:
            got = by.get((cell, policy), [])
            cells += [_range(got, "front_us"), _range(got, "workers_us"), _range(got, "doorbells", 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_note(m: Doc, other_share: float | None = None) -> str:
    """The machine and how busy it was when the run started. The load average trails by
    minutes (a run just ended raises it): where the run measured the other processes' share
    of the busy CPU, that share says whether the machine was shared (5% or more)."""
    load = m.get("loadavg_at_start") or []
    busy = (bool(load) and float(load[0]) >= 1.0) if other_share is None else other_share >= 0.05
    return (
        f"{m['cpus_usable']} CPUs ({m['cpu_model']}), load average {' '.join(load) or 'unknown'} at the "
        f"start{' (other work was running: the machine was shared)' if busy else ''}"
    )


def _noise(doc: Doc) -> str:
    shares = [r["other_cpu_share"] for r in doc["rounds"] if r["server"] == "uringapi" and "other_cpu_share" in r]
    if not shares:
        return ""
    return f"; other processes used {min(shares):.0%}–{max(shares):.0%} of the busy CPU during the runs"


def _range(rounds: list[dict[str, float]], key: str, digits: int = 1) -> str:
    values = [r[key] for r in rounds if key in r]
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    if f"{lo:.{digits}f}" == f"{hi:.{digits}f}":
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


# --- criterion --------------------------------------------------------------------

CRITERION_WHAT = {
    "ring/push_pop_one": "one 32-byte record, one core",
    "ring/push_pop_batch_64": "64 records pushed, then popped, one core",
    "ring/round_trip_two_threads_busy": "record there and back, two busy-polling threads",
    "channel_two_process/throughput_batched": "front end and forked worker on a memfd segment, busy polling",
    "channel_two_process/round_trip_busy": "64-byte request and response in slots",
    "channel_two_process/round_trip_worker_asleep": "worker blocked on its eventfd doorbell, ring.rs rule 4",
    "http_parse/small": "4-line GET head",
    "http_parse/browser": "11-line browser head",
    "scope_build/small": "ASGI scope from wrk's 3-header head, CPython embedded",
    "scope_build/browser": "10 headers, a query and a percent-encoded path",
    "scope_build/state": "`small` with a 4-key lifespan state to copy",
    "scope_build/tls": "`small` over TLS: the tls extension with a 1 KiB server certificate",
    "access_log/common": "one line, browser-like request",
    "access_log/combined": "one line, browser-like request",
    "access_log/json": "one line, browser-like request",
    "h2_hpack/first_request": "HPACK mirror, a browser-like block first on its connection (239 B)",
    "h2_hpack/next_request": "HPACK mirror, the same request next (34 B, mostly indexed)",
}


def criterion_section(doc: Doc, raw: Path) -> str:
    m = doc["machine"]
    lines = [
        f"`{doc['command']}`, {doc['date']}, {machine_note(m)}. Median time per iteration with "
        "criterion's 95 % interval; where a bench declares a throughput, the time per element "
        "and the rate.",
        "",
        "| bench | what | median (95 % interval) | per element |",
        "| --- | --- | --: | --: |",
    ]
    for b in doc["benches"]:
        lo, hi = b["median_ci_ns"]
        lines.append(
            f"| `{b['id']}` | {CRITERION_WHAT.get(b['id'], '')} | {fmt_ns(b['median_ns'])} "
            f"({fmt_ns(lo)}..{fmt_ns(hi)}) | {_per_element(b)} |"
        )
    return "\n".join(lines) + "\n"


def _per_element(b: Doc) -> str:
    t = b.get("throughput") or {}
    if "elements" in t and t["elements"] > 0:
        each = b["median_ns"] / t["elements"]
        return f"{fmt_ns(each)}, {fmt_rate(1e9 / each)}/s"
    if "bytes" in t and t["bytes"] > 0:
        return f"{t['bytes'] / b['median_ns'] * 1e9 / 2**20:,.0f} MiB/s"
    return "—"


def fmt_ns(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{_three(ns / scale)} {unit}"
    return f"{_three(ns)} ns"


def fmt_rate(per_s: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{_three(per_s / scale)} {unit}"
    return _three(per_s)


def _three(x: float) -> str:
    """Three significant figures."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


# --- worker CPU -------------------------------------------------------------------

WORKER_CPU_WHAT = {
    "noop": "plain ASGI: `http.response.start`, then `ok`",
    "scope": "the same after reading every scope key",
    "fastapi": "`GET /json` of `benches/e2e/apps/fastapi_app.py`",
}


def worker_cpu_figures(case: Doc) -> Doc:
    """Per request over one case's rounds: median, min and max CPU-µs (utime+stime), the
    median on-CPU µs (schedstat) and requests per second."""
    cpu = [r["cpu_us"] / r["requests"] for r in case["rounds"] if r["requests"]]
    on_cpu = [r["on_cpu_us"] / r["requests"] for r in case["rounds"] if r["requests"]]
    rate = [r["requests"] / r["seconds"] for r in case["rounds"] if r["seconds"]]
    return {
        "cpu_us": statistics.median(cpu) if cpu else None,
        "min": min(cpu, default=None),
        "max": max(cpu, default=None),
        "on_cpu_us": statistics.median(on_cpu) if on_cpu else None,
        "rps": statistics.median(rate) if rate else None,
    }


def worker_cpu_section(doc: Doc, raw: Path) -> str:
    b, m = doc["bench"], doc["machine"]
    lines = [
        f"`{doc['command']}`, {doc['date']}, Python {doc['python_version']}, window {b['window']}, "
        f"{b['rounds']} rounds of {b['seconds']} s after {b['warmup_s']} s of warm-up, worker and bench "
        f"{'pinned to different CPUs' if b['pinned'] else 'not pinned'}, {machine_note(m)}:",
        "",
        "| case | worker CPU-µs/req (min..max) | on-CPU µs/req | req/s |",
        "| --- | --: | --: | --: |",
    ]
    for case in b["cases"]:
        f = worker_cpu_figures(case)
        what = WORKER_CPU_WHAT.get(case["name"])
        name = f"`{case['name']}` ({what})" if what else f"`{case['name']}`"
        if f["cpu_us"] is None:
            lines.append(f"| {name} | — | — | — |")
            continue
        lines.append(
            f"| {name} | {f['cpu_us']:.2f} ({f['min']:.2f}..{f['max']:.2f}) | {f['on_cpu_us']:.2f} | {f['rps']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


# --- the WebSocket echo cell alone (ws_echo.py) ----------------------------------


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def websocket_section(doc: Doc, raw: Path) -> str:
    ws, m = doc["websocket"], doc["machine"]
    sizes = ws["sizes"]
    medians = ws["medians"]
    names = list(doc["servers"])
    label = {n: n if n == "uringapi" or not doc["servers"][n] else f"{n} {doc['servers'][n]}" for n in names}
    label = {n: f"{v} (websockets)" if n == "uvicorn" else v for n, v in label.items()}
    rounds = max(r["round"] for r in ws["rounds"])
    other = statistics.median(r["other_cpu_share"] for r in ws["rounds"])
    lines = [
        f"`{ws['app']}` on {ws['workers']} workers per server under {ws['policy']}, {ws['connections']} "
        f"WebSockets in a closed loop (one binary message each, wait for its echo), {rounds} rounds in "
        f"rotating order of {ws['duration_s']} s (after {ws['warmup_s']} s of warm-up), started "
        f"{doc['started_at'][:16].replace('T', ' ')} UTC, {machine_note(m, other)}; other processes used a median "
        f"{other:.1%} of the busy CPU. CPU is the server's whole process tree per message; medians, "
        "then the range over rounds of msgs/s.",
        "",
        "| Server | " + " | ".join(f"{_size_label(z)} msgs/s | {_size_label(z)} CPU-µs/msg | {_size_label(z)} rounds"
                                   for z in sizes) + " |",
        "|:--|" + "--:|--:|--:|" * len(sizes),
    ]
    for name in names:
        cells = [label[name]]
        for z in sizes:
            med = medians[f"ws-echo-{z}"][name]
            got = [r["msgs_per_s"] for r in ws["rounds"] if r["server"] == name and r["cell"] == f"ws-echo-{z}"]
            cells += [f"{med['msgs_per_s']:,.0f}", f"{med['cpu_us_per_msg']:.1f}",
                      f"{min(got) / 1000:.0f}–{max(got) / 1000:.0f}k"]
        lines.append("| " + " | ".join(cells) + " |")
    if "uringapi" in names:
        lines.append("")
        for peer in (n for n in names if n != "uringapi"):
            ratios = []
            for z in sizes:
                ours, theirs = medians[f"ws-echo-{z}"]["uringapi"], medians[f"ws-echo-{z}"][peer]
                ratios.append(f"{ours['msgs_per_s'] / theirs['msgs_per_s']:.2f}× {peer}'s msgs/s at {_size_label(z)} "
                              f"for {ours['cpu_us_per_msg'] / theirs['cpu_us_per_msg']:.2f}× its CPU per message")
            lines.append(f"- uringapi against {peer}: " + "; ".join(ratios) + ".")
    return "\n".join(lines) + "\n"


# --- the README -------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Doc, Path], str]] = {
    "microseconds": microseconds_section,
    "criterion": criterion_section,
    "worker-cpu": worker_cpu_section,
    "websocket": websocket_section,
}


def section(name: str, doc: Doc, raw: Path) -> str:
    """The whole text between a section's markers: its table, then its raw file."""
    return SECTIONS[name](doc, raw) + f"\nRaw figures: `{relative(raw)}`.\n"


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(paths.REPO))
    except ValueError:
        return str(path)


def current(readme_text: str, name: str) -> str:
    """The text between a section's markers (ValueError when they are missing)."""
    start, end = markers(name)
    i, j = readme_text.find(start), readme_text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README.md has no {start} … {end} markers")
    return readme_text[i + len(start) : j].strip("\n")


def raw_path(readme_text: str, name: str) -> Path:
    """The raw file a section names (ValueError when it names none)."""
    found = RAW_LINE.search(current(readme_text, name))
    if not found:
        raise ValueError(f"the README's {name} section names no raw figures file")
    return paths.REPO / found.group(1)


def replace(readme_text: str, name: str, body: str) -> str:
    start, end = markers(name)
    current(readme_text, name)  # raises when the markers are missing
    i, j = readme_text.index(start), readme_text.index(end)
    return f"{readme_text[: i + len(start)]}\n{body.rstrip()}\n{readme_text[j:]}"


def regenerate(readme_text: str, raw: dict[str, Path] | None = None) -> str:
    """Every section from its raw file: `raw[name]` when given, else the one the section names."""
    for name in SECTIONS:
        path = (raw or {}).get(name) or raw_path(readme_text, name)
        readme_text = replace(readme_text, name, section(name, json.loads(path.read_text()), path))
    return readme_text
