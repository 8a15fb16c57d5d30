"""`--loadgen oha`: the fixed-rate cell's figures from oha (crates.io) read the same as
from our generator. Skipped when oha is not installed (`cargo install --locked oha`, which
`run.py --loadgen oha` and `oha_check.py` do themselves). About 6 s.
"""

from __future__ import annotations

import http.server
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benches" / "e2e"))
from benchkit import fixed_rate, prereqs, runner  # noqa: E402
from benchkit.cells import Cell  # noqa: E402


def _oha() -> Path:
    try:
        return Path(prereqs.ensure_oha(install=False))
    except prereqs.SetupError as exc:
        pytest.skip(str(exc))


def _server(status: int, served: list[str]) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP/1.1 server answering `status` to every GET; `served` gets each path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body are two writes

        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status", [200, 503])
def test_oha_at_a_fixed_rate_reports_what_the_server_served(status: int) -> None:
    binary = _oha()
    served: list[str] = []
    server = _server(status, served)
    try:
        cell = Cell("probe", "probe", "unused:app", "/probe")
        result = fixed_rate.run_oha(binary, cell, server.server_address[1], 50, 2, 2)
    finally:
        server.shutdown()
        server.server_close()
    # 2 s at 50/s over 2 connections: about 100 requests, every answer counted; a request
    # still in flight at the deadline is aborted and counted as an error.
    assert 90 <= result.completed <= 101, result
    assert result.completed <= len(served) <= result.completed + result.errors and set(served) == {"/probe"}
    assert result.errors <= 2
    assert result.non_2xx == (0 if status == 200 else result.completed)
    assert result.late_sends is None  # oha does not report it
    lat = result.latency_us
    assert lat["p50"] is not None and 0 < lat["p50"] <= lat["p99"] <= lat["max"]


@pytest.mark.parametrize("loadgen", ["fixed_rate", "oha"])
def test_the_fixed_rate_cell_runs_the_generator_it_was_given(loadgen: str) -> None:
    """run.py --loadgen: the plan's generator is the one that sends (oha reports no late
    sends, ours does)."""
    if loadgen == "oha":
        binary = _oha()
    elif prereqs.find_rustc() is None:
        pytest.skip("rustc is not installed")
    else:
        binary = prereqs.build_loadgen()
    served: list[str] = []
    server = _server(200, served)
    try:
        cell = Cell("probe", "probe", "unused:app", "/probe")
        plan = runner.FixedRatePlan(binary, cell, 0.5, 2, loadgen=loadgen)
        result = plan.run(server.server_address[1], 40, 1)
    finally:
        server.shutdown()
        server.server_close()
    assert 35 <= result.completed <= 41 and result.completed <= len(served)
    assert (result.late_sends is None) == (loadgen == "oha")
