"""Two builds of the uringapi front end, side by side: saturation req/s and server CPU-µs/req.

Used when a change should not move the figures (a refactor, a crate swap): both binaries
serve the same cells (HTTPS ones with the bench's certificate) with the same workers (the Python side of the current `.venv`), in
alternating order round by round (ABBA...), so drift of a shared machine hits both alike.
The ratio of the medians is the result; absolute figures on a busy 2-core box mean little.

    .venv/bin/python benches/e2e/ab.py --build before=/tmp/uringapi-old \\
        --build after=worker/python/uringapi/_bin/uringapi --cells hello,fastapi-json \\
        --rounds 6 --out benches/results/ab-YYYY-MM-DD.json

A build is the `uringapi` front-end executable (`worker/python/uringapi/_bin/uringapi`
after `make setup`; copy it away before rebuilding the other commit). To compare the worker
side too, copy the whole `worker/python` folder (it holds `_bin/uringapi` and the built
`_native` module) and name it with `--pythonpath NAME=DIR`: that build's workers then import
`uringapi` from DIR (it goes first on their PYTHONPATH) instead of from `.venv`:

    cp -a worker/python /tmp/before-python    # before the change, after `make setup`
    .venv/bin/python benches/e2e/ab.py --build before=/tmp/before-python/uringapi/_bin/uringapi \\
        --pythonpath before=/tmp/before-python --build after=worker/python/uringapi/_bin/uringapi

`--granian` puts granian in the same rotation at a fixed config (`--granian-workers`,
`--granian-extra`, `--granian-policy`; no search), so each build has its ratio to it:

    .venv/bin/python benches/e2e/ab.py --build before=/tmp/uringapi-old \
        --build after=worker/python/uringapi/_bin/uringapi --cells https-hello --granian \
        --granian-extra '--runtime-mode mt --backpressure 256'

`--h2 1,8` measures the HTTP/2 cell's shapes instead (h2load, h2c prior knowledge, hello
app, `--http 2`, as benchkit/h2.py) over that many connections × 100 streams each; with
`--granian` granian `--http 2` runs in the same rotation, so each build has its ratio:

    .venv/bin/python benches/e2e/ab.py --build before=/tmp/uringapi-old \
        --build after=worker/python/uringapi/_bin/uringapi --h2 1,8 --granian --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import cells, h2, paths, prereqs, process, proctree, servers, wrk  # noqa: E402
from benchkit.runner import per_request_us, rotated  # noqa: E402

GRANIAN = "granian"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, metavar="NAME=EXE",
                    help="a front-end executable to compare (give two or more)")
    ap.add_argument("--cells", default="hello", help="comma list of cells (benches/e2e/benchkit/cells.py)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=5, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--pythonpath", action="append", default=[], metavar="NAME=DIR",
                    help="the workers of build NAME import uringapi from DIR (a copy of worker/python)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="front-end threads")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--h2", metavar="SHAPES", help="HTTP/2 instead: comma list of h2load connection counts")
    ap.add_argument("--granian", action="store_true",
                    help="granian in the rotation too (with --h2: --http 2); ratios are then against it")
    ap.add_argument("--granian-workers", type=int, default=1, help="HTTP/1.1 cells: granian's --workers")
    ap.add_argument("--granian-extra", default="", help="HTTP/1.1 cells: more granian options, e.g. "
                    "'--runtime-mode mt --backpressure 256' (its best on https-hello, quiet machine)")
    ap.add_argument("--granian-policy", choices=servers.POLICIES, default="batch",
                    help="HTTP/1.1 cells: granian's scheduling policy (chrt)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    builds = dict(_build(b) for b in a.build)
    if len(builds) < 2:
        ap.error("give at least two --build NAME=EXE")
    pythonpath = dict(_pythonpath(p, builds) for p in a.pythonpath)
    if a.h2:
        return _h2(a, builds, pythonpath)
    exe = prereqs.ensure_wrk()
    shape = wrk.LoadShape(threads=1, connections=a.connections)
    env = {"URINGAPI_PYTHON": str(paths.VENV_PYTHON)}
    log_dir = paths.WORK_DIR / "ab"
    samples: list[dict[str, object]] = []
    names = [*builds, *([GRANIAN] if a.granian else [])]
    granian = servers.select([GRANIAN])[0]
    granian_settings = servers.Settings(workers=a.granian_workers, threads=1, extra=tuple(shlex.split(a.granian_extra)))
    for cell in cells.select(a.cells.split(",")):
        for r in range(a.rounds):
            order = rotated(names, r)
            for name in order if r % 2 == 0 else reversed(order):
                port = process.free_port()
                if name == GRANIAN:
                    cmd = granian.command(cell, port, granian_settings, None, a.granian_policy)
                    run_env = {**env, **granian.env(cell)}
                else:
                    cmd = [
                        str(builds[name]), "serve", cell.target, "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(a.workers), "--threads", str(a.threads), "--app-dir", str(paths.APPS_DIR),
                        "--log-level", "warning", *servers.uringapi_tls_args(cell),
                    ]  # fmt: skip
                    run_env = {**env, "PYTHONPATH": pythonpath[name]} if name in pythonpath else env
                with process.running(cmd, cell, port, log_dir / f"{cell.name}-{name}-{r}.log", run_env) as pid:
                    wrk.run(exe, cell, port, a.warmup, shape)
                    before = proctree.snapshot(pid)
                    result = wrk.run(exe, cell, port, a.duration, shape)
                    cpu = proctree.window(before, proctree.snapshot(pid))
                row = {
                    "cell": cell.name, "build": name, "round": r, "rps": round(result.rps, 1),
                    "cpu_us_per_req": per_request_us(cpu.cpu_s, result.requests),
                    "client_cpu_us_per_req": per_request_us(result.client_cpu_s, result.requests),
                    "errors": sum(result.errors.values()),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                samples.append(row)

    print(f"\n| cell | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    first = GRANIAN if a.granian else next(iter(builds))
    for cell in cells.select(a.cells.split(",")):
        med = {b: _medians(samples, cell.name, b) for b in names}
        shown = [f"{med[b][0]:,.0f} req/s · {med[b][1]:.1f} µs ({med[b][0] / med[first][0]:.3f}×)" for b in names]
        print(f"| {cell.name} | {' | '.join(shown)} |")
    if a.out:
        a.out.write_text(json.dumps({
            "builds": {k: str(v) for k, v in builds.items()}, "pythonpath": pythonpath,
            "workers": a.workers, "threads": a.threads,
            "granian": {"workers": a.granian_workers, "extra": a.granian_extra, "policy": a.granian_policy,
                        "version": granian.version()} if a.granian else None,
            "samples": samples,
        }, indent=1))  # fmt: skip
    return 0


def _h2(a: argparse.Namespace, builds: dict[str, Path], pythonpath: dict[str, str]) -> int:
    """The HTTP/2 cell per build (and granian), in alternating order round by round."""
    exe = prereqs.ensure_h2load()
    hp = h2.H2Plan(exe)
    shapes = [int(c) for c in a.h2.split(",")]
    names = [*builds, *([GRANIAN] if a.granian else [])]
    granian = servers.select([GRANIAN])[0]
    settings = servers.Settings(workers=a.workers, threads=1)
    env = {"URINGAPI_PYTHON": str(paths.VENV_PYTHON)}
    samples: list[dict[str, object]] = []
    for r in range(a.rounds):
        order = rotated(names, r)
        for name in order if r % 2 == 0 else reversed(order):
            for conns in shapes:
                port = process.free_port()
                if name == GRANIAN:
                    cmd = h2.command_for(granian, port, settings)
                    run_env = {**env, **granian.env(h2.CELL)}
                else:
                    cmd = [
                        str(builds[name]), "serve", h2.CELL.target, "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(a.workers), "--threads", str(a.threads), "--app-dir", str(paths.APPS_DIR),
                        "--log-level", "warning", "--http", "2", "--sched", "batch",
                    ]  # fmt: skip
                    run_env = {**env, "PYTHONPATH": pythonpath[name]} if name in pythonpath else env
                log = paths.WORK_DIR / "ab" / f"h2-c{conns}-{name}-{r}.log"
                url = f"http://127.0.0.1:{port}{h2.CELL.path}"
                with process.running(cmd, h2.CELL, port, log, run_env, probe=h2.probe) as pid:
                    h2.h2load(hp, url, conns, a.warmup)
                    before = proctree.snapshot(pid)
                    result = h2.h2load(hp, url, conns, a.duration)
                    cpu = proctree.window(before, proctree.snapshot(pid))
                row = {
                    "cell": f"h2-c{conns}", "build": name, "round": r,
                    "rps": round(result["succeeded"] / result["elapsed_s"], 1),
                    "cpu_us_per_req": per_request_us(cpu.cpu_s, result["succeeded"]),
                    "errors": result["failed"] + result["errored"] + result["timeout"],
                    "mean_request_us": result["mean_request_us"],
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                samples.append(row)
    base = GRANIAN if a.granian else next(iter(builds))
    print(f"\n| cell | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for conns in shapes:
        cell = f"h2-c{conns}"
        med = {b: _medians(samples, cell, b) for b in names}
        shown = [f"{med[b][0]:,.0f} req/s · {med[b][1]:.1f} µs ({med[b][0] / med[base][0]:.2f}× {base})" for b in names]
        print(f"| {cell} | {' | '.join(shown)} |")
    if a.out:
        meta = {"builds": {k: str(v) for k, v in builds.items()}, "pythonpath": pythonpath,
                "h2": {"shapes": shapes, "streams": hp.streams, "workers": a.workers, "threads": a.threads,
                       "duration_s": a.duration, "warmup_s": a.warmup, "rounds": a.rounds,
                "client": f"h2load -t {h2.H2LOAD_THREADS} -c <shape> -m {hp.streams}",
                "granian": granian.version() if a.granian else None}}  # fmt: skip
        a.out.write_text(json.dumps({**meta, "samples": samples}, indent=1))
    return 0


def _build(spec: str) -> tuple[str, Path]:
    name, sep, exe = spec.partition("=")
    path = Path(exe)
    if not sep or not path.is_file():
        sys.exit(f"error: --build {spec}: expected NAME=EXECUTABLE\nhint: e.g. --build after=worker/python/uringapi/_bin/uringapi")
    return name, path.resolve()


def _pythonpath(spec: str, builds: dict[str, Path]) -> tuple[str, str]:
    name, sep, folder = spec.partition("=")
    if not sep or name not in builds or not (Path(folder) / "uringapi" / "__init__.py").is_file():
        sys.exit(f"error: --pythonpath {spec}: expected NAME=DIR, NAME a --build and DIR holding uringapi/\n"
                 "hint: e.g. cp -a worker/python /tmp/before-python; --pythonpath before=/tmp/before-python")
    return name, str(Path(folder).resolve())


def _medians(samples: list[dict[str, object]], cell: str, build: str) -> tuple[float, float]:
    rows = [s for s in samples if s["cell"] == cell and s["build"] == build and not s["errors"]]
    if not rows:
        return float("nan"), float("nan")
    return statistics.median(float(s["rps"]) for s in rows), statistics.median(float(s["cpu_us_per_req"]) for s in rows)


if __name__ == "__main__":
    raise SystemExit(main())
