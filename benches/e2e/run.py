#!/usr/bin/env python3
"""End-to-end benchmark: uringapi vs granian vs uvicorn, plus native-ref as the ceiling.

Every cell (one app endpoint) runs under every server, same worker count, in
rotating order per round; wrk saturates each server over loopback keep-alive,
then an open-loop generator measures latency at a fixed rate below saturation,
and the blocking-endpoint scenario measures a fast endpoint's latency while
another endpoint blocks its worker's event loop for 50 ms, 4 times a second;
the idle-connections cell holds 10,000 idle keep-alive connections per server and
reports the RSS each costs (benchkit/idle.py); the HTTP/2 cell measures h2c with h2load
over 1 and 8 connections × 100 streams (benchkit/h2.py).
Writes benches/results/<date>.{json,md,png} and, for full runs, the README
section between <!-- bench:start --> and <!-- bench:end -->.

    .venv/bin/python benches/e2e/run.py            # full run, both policies (1½–2 hours on 2 CPUs)
    .venv/bin/python benches/e2e/run.py --quick    # about 4½ minutes on 2 CPUs, README untouched
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from benchkit import blocking, cells, idle, paths, prereqs, servers

QUICK = {
    "rounds": 1, "duration": 3, "warmup": 1, "blocking_duration": 2, "policies": ["batch"], "probe_duration": 1,
    "probe_warmup": 0, "idle_connections": idle.QUICK_CONNECTIONS, "ws_idle": 1000,
}  # fmt: skip
FULL = {"rounds": 3, "duration": 10, "warmup": 2, "policies": list(servers.POLICIES), "probe_duration": 2,
        "probe_warmup": 1, "idle_connections": idle.DEFAULT_CONNECTIONS, "ws_idle": 10_000}  # fmt: skip
"""Presets for options left unset; a full run's --blocking-duration follows --duration."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short round of hello + fastapi-json; README untouched")
    p.add_argument("--servers", type=_names, help="comma list of: native-ref, uringapi, granian, uvicorn (default all)")
    p.add_argument(
        "--apps", type=_names, help="comma list of cells or app groups (hello, body, fastapi, starlette, ...)"
    )
    p.add_argument("--duration", type=_positive_int, help="measured seconds per run (full 10, quick 3)")
    p.add_argument("--warmup", type=_positive_int, help="warm-up seconds before each measurement (full 2, quick 1)")
    p.add_argument("--rounds", type=_positive_int, help="rounds over all cells (full 3, quick 1)")
    p.add_argument("--workers", type=_positive_int, default=2, help="worker processes per server (default 2)")
    p.add_argument("--threads", type=_positive_int, default=1, help="uringapi/native-ref front-end threads (default 1)")
    p.add_argument(
        "--policies",
        type=_policies,
        help="scheduling policies every server runs under: other, batch (full: both; quick: batch)",
    )
    p.add_argument(
        "--probe-duration", type=_positive_int, help="seconds of wrk per config-search probe (full 2, quick 1)"
    )
    p.add_argument(
        "--probe-warmup",
        type=_non_negative_int,
        help="seconds of load before each probe's measured seconds (full 1, quick 0: the quick run "
        "checks the harness, not the choice; WebSocket probes take at most 0.5)",
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        help="no config search: every server at --workers/--threads and its default options",
    )
    p.add_argument("--connections", type=_positive_int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--fixed-rate-fraction", type=float, default=0.5, help="of the basis server's hello peak (default 0.5)"
    )
    p.add_argument(
        "--fixed-rate-basis",
        default="best-peer",
        help="server whose hello peak sets the fixed rate, 'best-peer' (default: the fastest of granian and "
        "uvicorn, each at its best policy, as the performance targets say) or 'slowest' (also the fallback "
        "when the named server was not measured)",
    )
    p.add_argument(
        "--fixed-rate-connections", type=_positive_int, default=32, help="open-loop connections (default 32)"
    )
    p.add_argument(
        "--loadgen",
        choices=("fixed_rate", "oha"),
        default="fixed_rate",
        help="open-loop generator of the fixed-rate and noisy-neighbour cells: ours (loadgen/fixed_rate.rs, "
        "default) or oha from crates.io (installed with cargo when missing)",
    )
    p.add_argument("--no-fixed-rate", action="store_true", help="skip the fixed-rate latency run")
    p.add_argument(
        "--noisy-fraction",
        type=float,
        default=0.3,
        help="noisy-neighbour cell: fixed rate as a fraction of the same basis peak, beside a CPU hog (default 0.3)",
    )
    p.add_argument(
        "--no-overhead", action="store_true", help="skip the server-overhead runs (app CPU measured in the worker)"
    )
    p.add_argument("--no-noisy", action="store_true", help="skip the noisy-neighbour cell")
    p.add_argument("--no-blocking", action="store_true", help="skip the blocking-endpoint scenario")
    p.add_argument(
        "--blocking-rate",
        type=float,
        default=blocking.DEFAULT_FAST_RATE,
        help=f"/fast req/s in the blocking-endpoint scenario (default {blocking.DEFAULT_FAST_RATE:,.0f})",
    )
    p.add_argument(
        "--blocking-duration",
        type=_positive_int,
        help="measured seconds per phase of the blocking-endpoint scenario (full: --duration, quick 2)",
    )
    p.add_argument(
        "--idle-connections",
        type=_positive_int,
        help=f"idle keep-alive connections per server in the idle-connections cell (full {idle.DEFAULT_CONNECTIONS:,}, "
        f"quick {idle.QUICK_CONNECTIONS:,})",
    )
    p.add_argument("--no-idle", action="store_true", help="skip the idle-connections cell (RSS per idle connection)")
    p.add_argument("--no-websocket", action="store_true", help="skip the WebSocket cell")
    p.add_argument(
        "--ws-connections", type=_positive_int, default=64, help="WebSockets in the echo load (default 64)"
    )
    p.add_argument(
        "--ws-idle", type=_positive_int, help="idle WebSockets whose memory is measured (full 10,000, quick 1,000)"
    )
    p.add_argument(
        "--no-h2", action="store_true", help="skip the HTTP/2 cell (h2load, 1 and 8 connections × 100 streams)"
    )
    p.add_argument("--no-setup", action="store_true", help="do not pip/apt-install anything")
    p.add_argument("--no-readme", action="store_true", help="do not update README.md even on a full run")
    p.add_argument(
        "--readme-from",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite README.md's bench section (and JSON's .md beside it) from a results file",
    )
    p.add_argument("--out", type=Path, default=paths.RESULTS_DIR, help="output folder (default benches/results)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.blocking_duration is None:
        args.blocking_duration = args.duration
    if not 0 < args.fixed_rate_fraction <= 1:
        p.error("--fixed-rate-fraction must be in (0, 1]")
    if not 0 < args.noisy_fraction <= 1:
        p.error("--noisy-fraction must be in (0, 1]")
    if not args.blocking_rate > 0:
        p.error("--blocking-rate must be positive")
    return args


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _policies(text: str) -> list[str]:
    names = _names(text)
    unknown = [n for n in names if n not in servers.POLICIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(servers.POLICIES)}")
    return list(dict.fromkeys(names))


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of seconds")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def reexec_in_venv() -> None:
    """The harness imports matplotlib and reads package versions: run it in .venv."""
    if Path(sys.prefix).resolve() != paths.VENV.resolve() and paths.VENV_PYTHON.exists():
        os.execv(paths.VENV_PYTHON, [str(paths.VENV_PYTHON), *sys.argv])


def fail(message: str, hint: str) -> int:
    print(f"error: {message}\nhint: {hint}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.readme_from is not None:
        return readme_from(args.readme_from)
    try:
        chosen_cells = cells.select(args.apps or (list(cells.QUICK_CELLS) if args.quick else None))
        chosen_servers = servers.select(args.servers)
    except ValueError as exc:
        return fail(str(exc), "see --help for the names")
    try:
        if not args.no_setup:
            prereqs.ensure_requirements()
        wrk = prereqs.ensure_wrk()
    except prereqs.SetupError as exc:
        return fail(str(exc), exc.hint)
    # Imported only now: they need matplotlib, which setup may just have installed.
    from benchkit import session

    doc = session.run(args, chosen_cells, chosen_servers, wrk)
    stem = doc["date"] + ("-quick" if args.quick else "")
    return session.write_outputs(doc, args.out, stem, update_readme=not (args.quick or args.no_readme))


def readme_from(path: Path) -> int:
    """The README's bench section is a pure function of a results file: regenerate it."""
    from benchkit import report

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return fail(f"cannot read {path}: {exc}", "pass a benches/results/<date>.json written by run.py")
    section = report.readme_section(doc, path)
    if not report.update_readme(paths.README, section):
        return fail(f"{paths.README} has no {report.README_START} … {report.README_END} markers", "add them back")
    path.with_suffix(".md").write_text(report.markdown(doc))
    print(f"wrote {paths.README} and {path.with_suffix('.md')} from {path}", file=sys.stderr)
    return 0


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that the server under test is stopped on the
    way out (the default action would leave it running in its own session)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    reexec_in_venv()
    exit_on_sigterm()
    sys.exit(main(sys.argv[1:]))
