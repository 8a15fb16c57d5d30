"""The README's tables outside the bench section ("Where the microseconds go", the
criterion micro-benchmarks, worker CPU) are generated from committed raw files:
`benches/e2e/tables.py readme` reproduces each section byte for byte from the file it
names, and a table that disagrees with its raw file is caught.

Measures nothing; runs in well under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "benches" / "e2e"

sys.path.insert(0, str(E2E))
from benchkit import tables  # noqa: E402

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("name", list(tables.SECTIONS))
def test_section_is_its_committed_raw_file_rendered(name: str) -> None:
    raw = tables.raw_path(README, name)
    assert raw.parent == REPO / "benches" / "results", f"{name}: raw file outside benches/results: {raw}"
    assert raw.exists(), f"{name}: the README names {raw}, which is not committed"
    doc = json.loads(raw.read_text())
    assert tables.current(README, name) == tables.section(name, doc, raw).strip("\n")


def test_regenerating_every_section_changes_nothing() -> None:
    assert tables.regenerate(README) == README
    done = subprocess.run(
        [sys.executable, str(E2E / "tables.py"), "readme", "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", list(tables.SECTIONS))
def test_a_hand_edited_table_is_caught(name: str) -> None:
    body = tables.current(README, name)
    table_row = next(line for line in body.splitlines() if line.startswith("| ") and any(ch.isdigit() for ch in line))
    digit = next(i for i, ch in enumerate(table_row) if ch.isdigit())
    edited_row = table_row[:digit] + str((int(table_row[digit]) + 1) % 10) + table_row[digit + 1 :]
    edited = README.replace(table_row, edited_row, 1)
    assert edited != README
    assert tables.regenerate(edited) == README


def test_microseconds_split_adds_up_to_the_whole_server() -> None:
    """Front end plus workers is the server tree's CPU per request that run.py recorded."""
    doc = json.loads(tables.raw_path(README, "microseconds").read_text())
    by = tables.microseconds_rows(doc)
    assert {cell for cell, _ in by} == {"hello", "fastapi-json"}
    assert {policy for _, policy in by} == {"other", "batch"}
    rounds = [r for r in doc["rounds"] if r["server"] == "uringapi"]
    split = [f for figures in by.values() for f in figures]
    assert len(split) == len(rounds)
    for row in rounds:
        front = sum(p["cpu_s"] for p in row["cpu_by_process"] if p["name"] == "uringapi")
        workers = [p for p in row["cpu_by_process"] if p["name"] != "uringapi"]
        assert front > 0 and len(workers) == doc["config"]["workers"], row["cpu_by_process"]
        total = (front + sum(p["cpu_s"] for p in workers)) * 1e6 / row["requests"]
        assert total == pytest.approx(row["cpu_us_per_req"], abs=0.05)


def test_criterion_raw_file_holds_every_bench_with_its_samples() -> None:
    doc = json.loads(tables.raw_path(README, "criterion").read_text())
    ids = [b["id"] for b in doc["benches"]]
    assert len(ids) == len(set(ids))
    assert set(tables.CRITERION_WHAT) <= set(ids), set(tables.CRITERION_WHAT) - set(ids)
    for b in doc["benches"]:
        lo, hi = b["median_ci_ns"]
        assert 0 < lo <= b["median_ns"] <= hi, b["id"]
        assert len(b["samples"]["iters"]) == len(b["samples"]["times_ns"]) > 0, b["id"]


def test_worker_cpu_raw_file_holds_every_round_of_every_case() -> None:
    doc = json.loads(tables.raw_path(README, "worker-cpu").read_text())
    bench = doc["bench"]
    assert [c["name"] for c in bench["cases"]] == list(tables.WORKER_CPU_WHAT)
    for case in bench["cases"]:
        assert len(case["rounds"]) == bench["rounds"]
        for r in case["rounds"]:
            assert r["requests"] > 0 and r["cpu_us"] > 0 and r["seconds"] > 0
    figures = {c["name"]: tables.worker_cpu_figures(c) for c in bench["cases"]}
    # FastAPI does more per request than a bare ASGI app: a sanity check of the columns.
    assert figures["fastapi"]["cpu_us"] > figures["noop"]["cpu_us"]
