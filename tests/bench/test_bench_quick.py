"""The end-to-end benchmark harness works: a short quick run against the servers
installed here (at least uvicorn) produces well-formed JSON, markdown and PNG.

Nothing here asserts on speed; it checks that the figures exist and make sense.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "benches" / "e2e"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
ALL_SERVERS = ("native-ref", "uringapi", "granian", "uvicorn")
QUICK_CELLS = ("hello", "fastapi-json")

sys.path.insert(0, str(E2E))
from benchkit import prereqs  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    try:
        prereqs.ensure_wrk()
    except prereqs.SetupError as exc:
        pytest.skip(f"wrk cannot be installed here: {exc}")
    out = tmp_path_factory.mktemp("bench")
    readme_before = _readme()
    cmd = [
        str(VENV_PYTHON), str(E2E / "run.py"), "--quick",
        "--servers", ",".join(ALL_SERVERS), "--duration", "1", "--warmup", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert _readme() == readme_before, "a quick run must never touch README.md"
    return out, done


def _readme() -> str | None:
    readme = REPO / "README.md"
    return readme.read_text() if readme.exists() else None


def _only(out: Path, suffix: str) -> Path:
    found = sorted(out.glob(f"*-quick{suffix}"))
    assert len(found) == 1, f"expected one *-quick{suffix} in {out}, found {found}"
    return found[0]


def _doc(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_only(out, ".json").read_text())
    return doc


def test_quick_run_succeeds(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, done = quick_run
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


def test_json_describes_machine_and_servers(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    doc = _doc(quick_run[0])
    assert doc["mode"] == "quick"
    assert doc["machine"]["nproc"] >= 1
    assert doc["machine"]["kernel"] and doc["machine"]["python"]
    assert doc["machine"]["wrk"].startswith("wrk")
    assert doc["config"]["cells"] == list(QUICK_CELLS)
    assert set(doc["servers"]) == set(ALL_SERVERS)
    assert doc["servers"]["uvicorn"]["status"] == "available"
    for name, info in doc["servers"].items():
        if info["status"] == "available":
            assert info["version"], name
        else:
            assert info["status"] == "skipped" and info["reason"], name


def test_every_available_server_has_positive_figures(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    doc = _doc(quick_run[0])
    assert doc["failures"] == []
    available = {n for n, i in doc["servers"].items() if i["status"] == "available"}
    assert "uvicorn" in available
    for cell in QUICK_CELLS:
        expected = available - ({"native-ref"} if cell != "hello" else set())
        assert set(doc["medians"][cell]) == expected, cell
        for server, m in doc["medians"][cell].items():
            assert m["rps"] > 0 and m["cpu_us_per_req"] > 0, (cell, server)
            assert 0 < m["p50_us"] <= m["p90_us"] <= m["p99_us"], (cell, server)
            # Error counts are reported, not judged: a server's bugs belong to its own tests.
            assert isinstance(m["errors_total"], int) and m["errors_total"] >= 0, (cell, server)
    for row in doc["rounds"]:
        assert row["requests"] > 0 and row["cpu_s"] > 0 and row["duration_s"] > 0
        assert row["cpu_by_process"], row["server"]


def test_fixed_rate_run_uses_half_the_slowest_peak(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    doc = _doc(quick_run[0])
    fr = doc["fixed_rate"]
    if prereqs.find_rustc() is None:
        assert fr["skipped"]
        return
    peaks = {s: m["rps"] for s, m in doc["medians"]["hello"].items()}
    assert fr["basis"] == {"server": min(peaks, key=peaks.__getitem__), "rps": min(peaks.values())}
    assert fr["rate"] == pytest.approx(0.5 * min(peaks.values()), rel=1e-3)
    assert fr["failures"] == []
    assert set(fr["medians"]) == set(peaks)
    for server, m in fr["medians"].items():
        assert m["achieved_rate"] > 0 and 0 < m["p50_us"] <= m["p99_us"], server


def test_markdown_table_lists_every_measured_cell(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out = quick_run[0]
    table = _only(out, ".md").read_text()
    doc = _doc(out)
    assert "| Cell | Server | req/s | vs granian | p50 | p99 | CPU-µs/req | errors |" in table
    for cell, by_server in doc["medians"].items():
        for server in by_server:
            assert f"| {cell} | {server} |" in table
    for skipped in doc["skipped"]:
        assert f"Not measured: {skipped['server']}" in table


def test_chart_is_a_png(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    png = _only(quick_run[0], ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


# --- the harness's own rules, without servers ------------------------------------


def test_rotation_gives_every_server_every_position() -> None:
    from benchkit.runner import rotated

    servers = ["native-ref", "uringapi", "granian", "uvicorn"]
    orders = [rotated(servers, r) for r in range(len(servers))]
    for position in range(len(servers)):
        assert sorted(order[position] for order in orders) == sorted(servers)


def test_cpu_of_a_worker_reaped_inside_the_window_is_counted() -> None:
    """The documented method: a descendant that exits and is reaped during the
    window still counts, through its parent's cutime/cstime."""
    from benchkit import proctree

    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    # On "go" the parent runs a CPU-burning child to completion (reaping it),
    # says "reaped", and stays alive until its stdin closes.
    parent_code = (
        "import subprocess, sys\n"
        "sys.stdin.readline()\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"
        "print('reaped', flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        before = proctree.snapshot(parent.pid)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        window = proctree.window(before, proctree.snapshot(parent.pid))
    finally:
        parent.stdin.close()
        parent.wait(timeout=30)
    assert window.cpu_s >= 0.4
