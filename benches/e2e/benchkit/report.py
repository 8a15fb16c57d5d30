"""Turn a results document into JSON, a markdown report, and the README section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import h2, idle, paths, websocket
from .runner import NOISE_WARNING_SHARE, SERVER_ORDER, failure_line, fmt_us, ordered_servers, summarize_fixed_rate
from .servers import BASELINE

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
ERROR_NOTE_SHARE = 0.01
"""Runs with more errors than this share of their responses are listed in the notes."""

Doc = dict[str, Any]


def write_json(doc: Doc, path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def markdown(doc: Doc) -> str:
    parts = [_preamble(doc), _saturation_table(doc)]
    sections = (
        _config_section(doc), _policy_table(doc), _overhead_section(doc),
        _fixed_rate_section(doc), _noisy_section(doc), _blocking_section(doc), idle.section(doc),
        websocket.section(doc), h2.section(doc),
    )  # fmt: skip
    for section in sections:
        if section:
            parts.append(section)
    notes = _notes(doc)
    if notes:
        parts.append(notes)
    return "\n\n".join(parts) + "\n"


def readme_section(doc: Doc, json_path: Path) -> str:
    """The README's bench section: the tables, then where the chart and the raw figures
    are. A function of the results file alone (`run.py --readme-from`)."""
    png = json_path.with_suffix(".png")
    chart_part = f"Chart: `{_relative(png)}`; raw" if png.exists() else "Raw"
    return markdown(doc) + f"\n{chart_part} figures: `{_relative(json_path)}`.\n"


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(paths.REPO))
    except ValueError:
        return str(path)


def update_readme(readme: Path, table: str) -> bool:
    """Replace the text between the bench markers; False when there are none."""
    if not readme.exists():
        return False
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    head = text[: start + len(README_START)]
    readme.write_text(f"{head}\n{table.rstrip()}\n{text[end:]}")
    return True


def _preamble(doc: Doc) -> str:
    m, c = doc["machine"], doc["config"]
    versions = ", ".join(
        f"{name} {info['version']}" for name, info in _ordered(doc["servers"].items()) if info["status"] == "available"
    )
    return "\n".join(
        [
            f"Measured {doc['date']} ({doc['mode']} run) on {m['nproc']} CPUs ({m['cpu_model']}), "
            f"Linux {m['kernel']}, Python {m['python']}.",
            f"Servers: {versions or 'none'}. "
            + (
                "Workers, threads and options per server, cell and policy: the config table below "
                f"(the blocking scenario: {c['workers']} workers each, defaults)."
                if c.get("search")
                else f"Each runs {c['workers']} worker processes "
                f"(uringapi and native-ref: {c['threads']} front-end thread{'s' if c['threads'] != 1 else ''})."
            ),
            f"Load: wrk -t{c['wrk_threads']} -c{c['connections']}, keep-alive over loopback; "
            f"{c['rounds']} round{'s' if c['rounds'] != 1 else ''} of {c['duration_s']} s after "
            f"{c['warmup_s']} s warm-up, servers in rotating order; figures are medians over rounds.",
            "CPU-µs/req: CPU time of the server process and all its descendants during the measured "
            "window, divided by completed requests (the load generator's own CPU is not included).",
            *(
                [
                    "Doorbells/req (uringapi only): eventfd writes by its front end and workers to wake a "
                    "sleeping peer during the window, from its metrics endpoint, divided by the requests it served."
                ]
                if doc["servers"].get("uringapi", {}).get("status") == "available"
                else []
            ),
        ]
    )


def _saturation_table(doc: Doc) -> str:
    intro = [
        "Each server at its best scheduling policy (the one with the higher median req/s), named in the "
        f"Policy column; the {BASELINE} ratio is against {BASELINE} at its best too.",
        "",
    ]
    lines = [
        *(intro if _has_policies(doc) else []),
        f"| Cell | Server | Policy | req/s | vs {BASELINE} | p50 | p99 | CPU-µs/req | doorbells/req | errors |",
        "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell, by_server in doc["medians"].items():
        base = by_server.get(BASELINE, {}).get("rps")
        for server, m in _ordered(by_server.items()):
            lines.append(
                f"| {cell} | {server} | {_policy_name(m.get('policy'))} | {_fmt_int(m['rps'])} | "
                f"{_ratio(m['rps'], base)} | "
                f"{fmt_us(m['p50_us'])} | {fmt_us(m['p99_us'])} | {_fmt_cpu(m['cpu_us_per_req'])} | "
                f"{_fmt_doorbells(m)} | {m['errors_total']} |"
            )
    if lines[-1].startswith("|:--"):
        lines.append("| — | no cell was measured | | | | | | | | |")
    return "\n".join(lines)


POLICY_NAMES = {"other": "SCHED_OTHER", "batch": "SCHED_BATCH"}


def _has_policies(doc: Doc) -> bool:
    """Results schema 2 on: every run names its scheduling policy."""
    return int(doc.get("schema", 1)) >= 2


def _policy_name(policy: str | None) -> str:
    return POLICY_NAMES.get(policy or "", policy or "—")


def _config_section(doc: Doc) -> str | None:
    """What each server was given: the config search's choice per cell and policy."""
    found = doc.get("search")
    if not found or "skipped" in found:
        return None
    lines = [
        f"Config each server was given: the best of short wrk probes ({doc['config'].get('probe_duration_s')} s "
        "each, one knob at a time; `benches/e2e/README.md`) per cell and policy; granian always gets "
        "`--loop uvloop --http 1`, uvicorn `--loop uvloop --http httptools`.",
        "",
        "| Cell | Server | Policy | Config | probes | best probe req/s |",
        "|:--|:--|:--|:--|--:|--:|",
    ]
    for cell, by_server in found.items():
        for server, by_policy in _ordered(by_server.items()):
            for policy, r in by_policy.items():
                lines.append(
                    f"| {cell} | {server} | {_policy_name(policy)} | {_describe(r['config'])} | "
                    f"{len(r['probes'])} | {_fmt_int(r['rps'])} |"
                )
    return "\n".join(lines)


def _describe(config: dict[str, Any]) -> str:
    parts = [f"`{k} {v}`" if k.startswith("--") else f"{k} {v}" for k, v in config.items() if v is not None]
    return ", ".join(parts) or "defaults"


def _policy_table(doc: Doc) -> str | None:
    """Every server under every policy side by side, when the run had more than one."""
    policies = doc["config"].get("policies") or []
    if len(policies) < 2:
        return None
    head = " | ".join(f"{_policy_name(p)}: req/s · CPU-µs/req" for p in policies)
    lines = [
        "Every server under each scheduling policy (uringapi: `--sched`; the others under `chrt`):",
        "",
        f"| Cell | Server | {head} |",
        "|:--|:--|" + "--:|" * len(policies),
    ]
    for cell, by_server in doc["medians"].items():
        for server, m in _ordered(by_server.items()):
            cells = []
            for policy in policies:
                pm = m.get("by_policy", {}).get(policy)
                cells.append("—" if pm is None else f"{_fmt_int(pm['rps'])} · {_fmt_cpu(pm['cpu_us_per_req'])}")
            lines.append(f"| {cell} | {server} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _fixed_rate_section(doc: Doc) -> str | None:
    fr = doc.get("fixed_rate")
    if not fr or not fr.get("medians"):
        return None
    basis = fr["basis"]
    basis_policy, each_at_best = "", ""
    if _has_policies(doc):
        basis_policy = f" under {_policy_name(basis.get('policy'))}"
        each_at_best = " Each server at its best policy (the lower CPU-µs/req)."
    lines = [
        f"Latency without saturation: `{fr['cell']}` at a fixed {fr['rate']:,.0f} req/s "
        f"({fr['fraction']:.0%} of {'the slowest median peak, ' if basis.get('slowest', True) else ''}"
        f"{'the best peer, ' if basis.get('best_peer') else ''}"
        f"{basis['server']}'s median peak of {basis['rps']:,.0f} req/s{basis_policy}); "
        f"open loop over {fr['connections']} connections{' (oha)' if fr.get('generator', '').startswith('oha') else ''}, "
        "each request timed from its scheduled send time."
        f"{each_at_best}",
        "",
        "| Server | Policy | achieved req/s | p50 | p90 | p99 | CPU-µs/req | doorbells/req | errors |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for server, m in _ordered(fr["medians"].items()):
        lines.append(
            f"| {server} | {_policy_name(m.get('policy'))} | {_fmt_int(m['achieved_rate'])} | "
            f"{fmt_us(m['p50_us'])} | {fmt_us(m['p90_us'])} | "
            f"{fmt_us(m['p99_us'])} | {_fmt_cpu(m['cpu_us_per_req'])} | {_fmt_doorbells(m)} | "
            f"{m['errors_total']} |"
        )
    return "\n".join(lines)


def _overhead_section(doc: Doc) -> str | None:
    o = doc.get("overhead")
    if not o or not o.get("rows"):
        return None
    lines = [
        "Server overhead per request: total CPU-µs/req (the saturation median above) minus the app's own, "
        "measured inside each worker around the app's synchronous steps (`benches/e2e/apps/app_cpu.py`, "
        "a separate run of the same server, config and policy).",
        "",
        "| Cell | Server | Policy | total CPU-µs/req | app CPU-µs/req | server overhead CPU-µs/req |",
        "|:--|:--|:--|--:|--:|--:|",
    ]
    rows = sorted(o["rows"], key=lambda r: (list(doc["medians"]).index(r["cell"]), SERVER_ORDER.index(r["server"])))
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['server']} | {_policy_name(r['policy'])} | {_fmt_cpu(r['total_cpu_us_per_req'])} | "
            f"{_fmt_cpu(r['app_cpu_us_per_req'])} | {_fmt_cpu(r['server_overhead_us_per_req'])} |"
        )
    return "\n".join(lines)


def _noisy_section(doc: Doc) -> str | None:
    n = doc.get("noisy")
    if not n or not n.get("medians"):
        return None
    # From the raw rounds, so that a results file written when this cell chose by CPU is
    # shown as every run is now: each server at the policy with the lower p99.
    medians = summarize_fixed_rate(n["rounds"], best="p99") if n.get("rounds") else n["medians"]
    basis = n["basis"]
    lines = [
        f"Noisy neighbour: `{n['cell']}` at a fixed {n['rate']:,.0f} req/s ({n['fraction']:.0%} of "
        f"{basis['server']}'s median peak) beside a CPU hog ({n['hog']}); open loop over {n['connections']} "
        f"connections{' (oha)' if n.get('generator', '').startswith('oha') else ''}, latency from each request's scheduled send time (coordinated omission corrected). "
        "Each server at its best policy for this cell's goal (the lower p99).",
        "",
        "| Server | Policy | achieved req/s | p50 | p99 | p99.9 | CPU-µs/req | errors |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for server, m in _ordered(medians.items()):
        lines.append(
            f"| {server} | {_policy_name(m.get('policy'))} | {_fmt_int(m['achieved_rate'])} | "
            f"{fmt_us(m['p50_us'])} | {fmt_us(m['p99_us'])} | {fmt_us(m['p999_us'])} | "
            f"{_fmt_cpu(m['cpu_us_per_req'])} | {m['errors_total']} |"
        )
    return "\n".join(lines)


def _blocking_section(doc: Doc) -> str | None:
    b = doc.get("blocking")
    if not b or not b.get("medians"):
        return None
    lines = [
        f"Blocking endpoint: `{b['app']}` on {b['workers']} workers per server, every server under "
        f"{_policy_name(b.get('policy'))}. `GET {b['block_path']}` "
        f"calls `time.sleep({b['block_ms'] / 1000:g})` inside `async def` (its worker's event loop stops for "
        f"{b['block_ms']} ms), {b['block_rate']:g} req/s over {b['block_connections']} connections of its own, "
        f"while `GET {b['fast_path']}` gets a fixed {b['fast_rate']:,.0f} req/s, open loop over "
        f"{b['fast_connections']} connections. Latency of `{b['fast_path']}` over {b['duration_s']} s "
        f"(\"alone\": the same load without `{b['block_path']}`, same server process, just before):",
        "",
        f"| Server | p50 | p90 | p99 | p99.9 | p99 alone | p99.9 alone | errors | {b['block_path']} served |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for server, m in _ordered(b["medians"].items()):
        lines.append(
            f"| {server} | {fmt_us(m['p50_us'])} | {fmt_us(m['p90_us'])} | {fmt_us(m['p99_us'])} | "
            f"{fmt_us(m['p999_us'])} | {fmt_us(m['alone_p99_us'])} | {fmt_us(m['alone_p999_us'])} | "
            f"{m['errors_total']} | {m['block_completed']:,}/{m['block_sent']:,} |"
        )
    return "\n".join(lines)


def _notes(doc: Doc) -> str | None:
    notes = [f"- Not measured: {s['server']} ({', '.join(s['cells'])}): {s['reason']}" for s in doc["skipped"]]
    if doc.get("schema", 1) < 2:
        notes.append(
            "- Policy —: this run predates per-run scheduling policies (results schema 1) and its rows "
            "name none; its commands show no `chrt` and no `--sched`, so uringapi ran with its default "
            "`--sched batch` and the other servers under the SCHED_OTHER they inherited."
        )
    fr = doc.get("fixed_rate") or {}
    if fr.get("skipped"):
        notes.append(f"- Fixed-rate run skipped: {fr['skipped']}")
    over = doc.get("overhead") or {}
    if over.get("skipped"):
        notes.append(f"- Server overhead skipped: {over['skipped']}")
    noisy = doc.get("noisy") or {}
    if noisy.get("skipped"):
        notes.append(f"- Noisy-neighbour cell skipped: {noisy['skipped']}")
    b = doc.get("blocking") or {}
    if b.get("skipped"):
        notes.append(f"- Blocking-endpoint scenario skipped: {b['skipped']}")
    stalls = {s: m["worker_stalls"] for s, m in (b.get("medians") or {}).items() if m["worker_stalls"] is not None}
    for server, n in stalls.items():
        notes.append(f"- Blocking endpoint: workers marked stalled by {server} (--stall-timeout): {n}.")
    notes.extend(_error_notes(doc["rounds"]))
    h2_rows = (doc.get("h2") or {}).get("rounds", [])
    noise = _noise_note(doc["rounds"] + fr.get("rounds", []) + noisy.get("rounds", []) + b.get("rounds", []) + h2_rows)
    if noise:
        notes.append(noise)
    failures = doc["failures"] + over.get("failures", []) + fr.get("failures", [])
    failures += noisy.get("failures", []) + b.get("failures", [])
    notes.extend(failure_line(f) for f in failures)
    notes.extend(websocket.notes(doc))
    notes.extend(h2.notes(doc))
    return "\n".join(notes) if notes else None


def _error_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run whose errors exceed ERROR_NOTE_SHARE of its responses:
    its throughput counts only completed responses and may mislead."""
    notes = []
    for r in rows:
        if r["errors_total"] > ERROR_NOTE_SHARE * max(1, r["requests"]):
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in r["errors"].items() if n)
            notes.append(
                f"- Errors: round {r['round']} {r['cell']} on {r['server']}: {kinds} "
                f"for {r['requests']:,} completed responses"
            )
    return notes


def _noise_note(rows: list[dict[str, Any]]) -> str | None:
    noisy = [r for r in rows if r["other_cpu_share"] > NOISE_WARNING_SHARE]
    if not noisy:
        return None
    worst = max(noisy, key=lambda r: r["other_cpu_share"])
    return (
        f"- Noisy: in {len(noisy)} of {len(rows)} runs other processes used more than "
        f"{NOISE_WARNING_SHARE:.0%} of the busy CPU (worst {worst['other_cpu_share']:.0%}, round {worst['round']} "
        f"{worst['cell']} on {worst['server']}); throughput from such runs is unreliable, CPU-µs/req less so."
    )


def _ordered(items: Any) -> list[tuple[str, Any]]:
    by_server = dict(items)
    return [(server, by_server[server]) for server in ordered_servers(by_server)]


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}×"


def _fmt_int(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _fmt_cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _fmt_doorbells(medians: dict[str, Any]) -> str:
    value = medians.get("doorbells_per_request")
    return "—" if value is None else f"{value:.3f}"
