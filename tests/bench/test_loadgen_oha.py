"""`--loadgen oha`: the fixed-rate cell's figures from oha (crates.io) read the same as
from our generator. Skipped when oha is not installed (`cargo install --locked oha`, which
`run.py --loadgen oha` and `oha_check.py` do themselves). About 6 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benches" / "e2e"))
from benchkit import fixed_rate, prereqs, runner  # noqa: E402
from benchkit.cells import Cell  # noqa: E402
from stub_http import serving  # noqa: E402


def _oha() -> Path:
    try:
        return Path(prereqs.ensure_oha(install=False))
    except prereqs.SetupError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("status", [200, 503])
def test_oha_at_a_fixed_rate_reports_what_the_server_served(status: int) -> None:
    binary = _oha()
    served: list[str] = []
    with serving(status, served) as port:
        cell = Cell("probe", "probe", "unused:app", "/probe")
        result = fixed_rate.run_oha(binary, cell, port, 50, 2, 2)
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
    with serving(200, served) as port:
        cell = Cell("probe", "probe", "unused:app", "/probe")
        plan = runner.FixedRatePlan(binary, cell, 0.5, 2, loadgen=loadgen)
        result = plan.run(port, 40, 1)
    assert 35 <= result.completed <= 41 and result.completed <= len(served)
    assert (result.late_sends is None) == (loadgen == "oha")
