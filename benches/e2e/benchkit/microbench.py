"""Runs the measurements behind the README's tables outside the bench section and writes
each one's raw file (see tables.py for the tables):

- `criterion`: `cargo bench -p uringapi-benches` on the criterion benches, with
  CRITERION_HOME in a fresh folder so that only this run's results are collected; every
  bench's estimates and samples, in the order they ran.
- `worker_cpu`: `cargo bench --bench worker_cpu -- --json PATH` and its rounds.
- `microseconds`: `run.py` on uringapi alone (hello and FastAPI /json, both policies, no
  search), its results file as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import machine, paths, prereqs

CRITERION_BENCHES = ("ring", "channel_two_process", "http_parse", "scope_build", "access_log",
                     "h2_hpack")
SCHEMA = 1


class MeasureError(Exception):
    """A measuring command failed; the message holds its tail."""


def _header(command: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine.describe(None, prereqs.find_rustc()),
    }


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, cwd=paths.REPO, env={**os.environ, **(env or {})}, text=True,
                          stdout=sys.stderr, stderr=subprocess.PIPE)  # fmt: skip
    if done.returncode != 0:
        raise MeasureError(f"`{' '.join(cmd)}` exited with {done.returncode}:\n{done.stderr[-3000:]}")


def criterion(benches: tuple[str, ...] = CRITERION_BENCHES) -> dict[str, Any]:
    targets = [a for b in benches for a in ("--bench", b)]
    cmd = ["cargo", "bench", "-p", "uringapi-benches", *targets]
    doc = _header(" ".join(cmd))
    with tempfile.TemporaryDirectory(prefix="criterion-") as home:
        _run(cmd, {"CRITERION_HOME": home})
        doc["benches"] = collect_criterion(Path(home))
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not doc["benches"]:
        raise MeasureError("criterion wrote no results")
    return doc


def collect_criterion(home: Path) -> list[dict[str, Any]]:
    """Every benchmark under a CRITERION_HOME, in the order it was measured."""
    found = []
    for bench_file in home.glob("**/new/benchmark.json"):
        new = bench_file.parent
        meta = json.loads(bench_file.read_text())
        est = json.loads((new / "estimates.json").read_text())
        sample = json.loads((new / "sample.json").read_text())
        throughput = meta.get("throughput") or None
        if throughput:
            kind, n = next(iter(throughput.items()))
            throughput = {kind.lower(): n}
        median = est["median"]
        found.append((bench_file.stat().st_mtime_ns, {
            "id": meta["full_id"],
            "group": meta["group_id"],
            "function": meta.get("function_id"),
            "throughput": throughput,
            "median_ns": median["point_estimate"],
            "median_ci_ns": [median["confidence_interval"]["lower_bound"],
                             median["confidence_interval"]["upper_bound"]],
            "mean_ns": est["mean"]["point_estimate"],
            "std_dev_ns": est["std_dev"]["point_estimate"],
            "samples": {"iters": sample["iters"], "times_ns": sample["times"]},
        }))  # fmt: skip
    return [b for _, b in sorted(found, key=lambda item: item[0])]


def worker_cpu(rounds: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="worker-cpu-") as tmp:
        out = Path(tmp) / "rounds.json"
        args = ["--rounds", str(rounds), "--seconds", f"{seconds:g}"]
        cmd = ["cargo", "bench", "-p", "uringapi-benches", "--bench", "worker_cpu", "--", *args]
        doc = _header(" ".join(cmd))
        _run([*cmd, "--json", str(out)])
        bench = json.loads(out.read_text())
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    version = subprocess.run([bench["python"], "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    doc["python_version"] = version.stdout.strip()
    doc["bench"] = bench
    return doc


def microseconds(rounds: int, duration: int, warmup: int) -> dict[str, Any]:
    """run.py's results file for uringapi alone; the table reads its rounds."""
    with tempfile.TemporaryDirectory(prefix="microseconds-") as tmp:
        cmd = [
            str(paths.VENV_PYTHON), str(paths.E2E_DIR / "run.py"), "--servers", "uringapi",
            "--apps", "hello,fastapi-json", "--policies", "other,batch", "--no-search",
            "--rounds", str(rounds), "--duration", str(duration), "--warmup", str(warmup),
            "--no-fixed-rate", "--no-noisy", "--no-overhead", "--no-blocking", "--no-idle",
            "--no-websocket", "--no-h2", "--no-readme", "--out", tmp,
        ]  # fmt: skip
        _run(cmd)
        written = [p for p in Path(tmp).glob("*.json")]
        if len(written) != 1:
            raise MeasureError(f"run.py wrote {len(written)} results files, expected one")
        return json.loads(written[0].read_text())
