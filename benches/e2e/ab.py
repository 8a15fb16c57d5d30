"""Two builds of the uringapi front end, side by side: saturation req/s and server CPU-µs/req.

Used when a change should not move the figures (a refactor, a crate swap): both binaries
serve the same cells with the same workers (the Python side of the current `.venv`), in
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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import cells, paths, prereqs, process, proctree, wrk  # noqa: E402
from benchkit.runner import per_request_us, rotated  # noqa: E402


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
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    builds = dict(_build(b) for b in a.build)
    if len(builds) < 2:
        ap.error("give at least two --build NAME=EXE")
    exe = prereqs.ensure_wrk()
    shape = wrk.LoadShape(threads=1, connections=a.connections)
    env = {"URINGAPI_PYTHON": str(paths.VENV_PYTHON)}
    pythonpath = dict(_pythonpath(p, builds) for p in a.pythonpath)
    log_dir = paths.WORK_DIR / "ab"
    samples: list[dict[str, object]] = []
    for cell in cells.select(a.cells.split(",")):
        for r in range(a.rounds):
            order = rotated(list(builds), r)
            for name in order if r % 2 == 0 else reversed(order):
                port = process.free_port()
                cmd = [
                    str(builds[name]), "serve", cell.target, "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(a.workers), "--threads", str(a.threads), "--app-dir", str(paths.APPS_DIR),
                    "--log-level", "warning",
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
                    "errors": sum(result.errors.values()),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                samples.append(row)

    print(f"\n| cell | {' | '.join(builds)} |\n|---|{'---|' * len(builds)}")
    first = next(iter(builds))
    for cell in cells.select(a.cells.split(",")):
        med = {b: _medians(samples, cell.name, b) for b in builds}
        shown = [f"{med[b][0]:,.0f} req/s · {med[b][1]:.1f} µs ({med[b][0] / med[first][0]:.3f}×)" for b in builds]
        print(f"| {cell.name} | {' | '.join(shown)} |")
    if a.out:
        a.out.write_text(json.dumps({
            "builds": {k: str(v) for k, v in builds.items()}, "pythonpath": pythonpath,
            "workers": a.workers, "threads": a.threads, "samples": samples,
        }, indent=1))  # fmt: skip
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
