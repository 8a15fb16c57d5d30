"""Measure and regenerate the README's tables outside the bench section.

    tables.py microseconds [--rounds N --duration S --warmup S]   # run.py on uringapi alone
    tables.py criterion                                             # the criterion benches
    tables.py worker-cpu [--rounds N --seconds S]                   # worker CPU without sockets
    tables.py readme [--check]

Each measuring command writes benches/results/<name>-<date>.json and rewrites its README
section from that file. `readme` rewrites every section from the raw file the section
names (a pure function of the committed files); with `--check` it changes nothing and
exits 1 when README.md and the raw files disagree. Measuring commands take the bench lock
themselves when run under `flock` (they do not take it on their own). The WebSocket
section's file comes from `ws_echo.py --out` (the bench's WebSocket cell alone); `readme`
renders it like the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import microbench, paths, tables  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("microseconds", help="uringapi's front-end and worker CPU per request (run.py)")
    m.add_argument("--rounds", type=_positive_int, default=4)
    m.add_argument("--duration", type=_positive_int, default=5, help="measured seconds per run (default 5)")
    m.add_argument("--warmup", type=_positive_int, default=1)
    sub.add_parser("criterion", help="cargo bench on the criterion benches")
    w = sub.add_parser("worker-cpu", help="cargo bench --bench worker_cpu")
    w.add_argument("--rounds", type=_positive_int, default=5)
    w.add_argument("--seconds", type=_positive_float, default=2.0)
    for s in (m, sub.choices["criterion"], w):
        s.add_argument("--out", type=Path, default=paths.RESULTS_DIR, help="folder of the raw file")
        s.add_argument("--no-readme", action="store_true", help="write the raw file only")
    r = sub.add_parser("readme", help="regenerate every section from the raw file it names")
    r.add_argument("--check", action="store_true", help="change nothing; exit 1 when README.md is stale")
    return p.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def fail(message: str, hint: str) -> int:
    print(f"error: {message}\nhint: {hint}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.what == "readme":
        return readme(args.check)
    try:
        if args.what == "microseconds":
            doc = microbench.microseconds(args.rounds, args.duration, args.warmup)
        elif args.what == "criterion":
            doc = microbench.criterion()
        else:
            doc = microbench.worker_cpu(args.rounds, args.seconds)
    except microbench.MeasureError as exc:
        return fail(str(exc), "see the command's output above")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.what}-{doc['date']}.json"
    raw.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {raw}", file=sys.stderr)
    if args.no_readme:
        return 0
    text = paths.README.read_text()
    try:
        paths.README.write_text(tables.replace(text, args.what, tables.section(args.what, doc, raw)))
    except ValueError as exc:
        return fail(str(exc), "add the markers back")
    print(f"rewrote the {args.what} section of {paths.README}", file=sys.stderr)
    return 0


def readme(check: bool) -> int:
    text = paths.README.read_text()
    try:
        new = tables.regenerate(text)
    except (ValueError, OSError) as exc:
        return fail(str(exc), "each section needs its markers and a committed raw file it names")
    if new == text:
        return 0
    if check:
        print("README.md is stale: run benches/e2e/tables.py readme", file=sys.stderr)
        return 1
    paths.README.write_text(new)
    print(f"rewrote {paths.README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
