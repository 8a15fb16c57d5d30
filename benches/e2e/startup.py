"""Start-up time and worker memory of one or more `uringapi` installs, side by side.

For each round and each install (rotating which goes first), start
`uringapi serve hello_asgi:app --workers 1 --threads 1` on a free loopback port and measure:

- start-up: from the exec of the command to the first `200` answer to `GET /` (the
  front end is up, the worker imported the app, ran lifespan and serves);
- worker RSS and PSS (`/proc/<pid>/smaps_rollup`) of the one worker process once it served
  that request;
- front-end RSS;
- the size of the installed `uringapi/_native*.so` (what every worker maps).

The medians go to stdout as a markdown table and, with `--out`, to a JSON file with every
sample. Used for the README's "Crate layout: start-up and worker memory" figures:

    .venv/bin/python benches/e2e/startup.py --rounds 7 \
        --install before=/path/to/old-venv --install after=.venv \
        --out benches/results/startup-YYYY-MM-DD.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/smaps_rollup (Rss, Pss)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def native_so_bytes(venv: Path) -> int:
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import uringapi._native as m; print(m.__file__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out).stat().st_size


def one_run(venv: Path) -> dict[str, float]:
    port = free_port()
    cmd = [str(venv / "bin" / "uringapi"), "serve", "hello_asgi:app", "--app-dir", str(APPS),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "1",
           "--log-level", "warning"]
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not answer within 60 s")
            time.sleep(0.005)
        startup = time.monotonic() - t0
        kids = descendants(proc.pid)
        # The front end is the process that owns the listener: with an exec'd binary it is
        # proc.pid itself; the worker is its one Python child.
        workers = [k for k in kids if b"uringapi" in Path(f"/proc/{k}/cmdline").read_bytes()
                   and kib(k, "Rss")]
        worker = workers[-1] if workers else None
        return {
            "startup_ms": startup * 1000,
            "worker_rss_kib": float(kib(worker, "Rss") or 0) if worker else 0.0,
            "worker_pss_kib": float(kib(worker, "Pss") or 0) if worker else 0.0,
            "frontend_rss_kib": float(kib(proc.pid, "Rss") or 0),
        }
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="append", required=True, metavar="LABEL=VENV",
                    help="a label and the venv whose bin/uringapi to run (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    installs = []
    for item in args.install:
        label, _, venv = item.partition("=")
        if not venv or not (Path(venv) / "bin" / "uringapi").exists():
            print(f"error: {item!r} names no venv with bin/uringapi", file=sys.stderr)
            print("hint: pass --install LABEL=PATH_TO_VENV", file=sys.stderr)
            return 2
        installs.append((label, Path(venv).resolve()))
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in installs}
    for r in range(args.rounds):
        order = installs[r % len(installs):] + installs[:r % len(installs)]
        for label, venv in order:
            samples[label].append(one_run(venv))
    keys = ("startup_ms", "worker_rss_kib", "worker_pss_kib", "frontend_rss_kib")
    print("| install | start-up to first 200 (ms) | worker RSS (MiB) | worker PSS (MiB) "
          "| front-end RSS (MiB) | `_native` .so (MB) |")
    print("|:--|--:|--:|--:|--:|--:|")
    result = {"rounds": args.rounds, "machine": os.uname().release, "installs": {}}
    for label, venv in installs:
        med = {k: statistics.median(s[k] for s in samples[label]) for k in keys}
        so = native_so_bytes(venv)
        result["installs"][label] = {"venv": str(venv), "native_so_bytes": so,
                                     "median": med, "samples": samples[label]}
        print(f"| {label} | {med['startup_ms']:.0f} | {med['worker_rss_kib'] / 1024:.1f} "
              f"| {med['worker_pss_kib'] / 1024:.1f} | {med['frontend_rss_kib'] / 1024:.1f} "
              f"| {so / 1e6:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
