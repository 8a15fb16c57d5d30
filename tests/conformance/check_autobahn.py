"""The Autobahn TestSuite's fuzzing client against `uringapi serve` (autobahn_app.py, an echo
app): all 517 cases, run by kosoku (PyPI), which drives Autobahn's own case files from a
Rust runner. Any case whose message exchange is FAILED, whose closing handshake is FAILED,
or that could not run (ERROR) fails the check; the full list of such cases is printed, and
so is the summary line (which the README quotes). The HTML/JSON report goes to
target/conformance/autobahn/<server>/.

CONFORMANCE_SERVER=uvicorn runs the same cases against uvicorn (websockets backend), to
show that the check itself is right (support.py).

The server runs with its defaults (16 MiB messages, the largest case is exactly that;
permessage-deflate on, which the 12.x and 13.x cases negotiate; keep-alive pings every 20 s).
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import os
from pathlib import Path

import pytest

import support
from kosoku import FailureError, run_fuzzingclient

TOTAL_CASES = 517
#: Cases run side by side (kosoku's concurrency). One at a time by default: the 12.x and
#: 13.x cases echo 1000 large messages each, and on a loaded 2-core box cases run side by
#: side overrun kosoku's per-case time limit (a slow machine, not a protocol fault).
CONCURRENCY = int(os.environ.get("AUTOBAHN_CONCURRENCY", "1"))
#: Hang guard for the whole run, not a speed assertion (pytest-timeout's comes after it).
RUN_TIMEOUT = 2400.0
REPORT_DIR = support.REPO / "target" / "conformance" / "autobahn"


def summary_line(server: str, results: list) -> str:
    behaviour = collections.Counter(r.behavior.value for r in results)
    close = collections.Counter(r.behavior_close.value for r in results)

    def counts(c: collections.Counter) -> str:
        order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "UNCLEAN",
                 "WRONG CODE", "FAILED BY CLIENT", "ERROR", "FAILED"]
        keys = [k for k in order if c[k]] + sorted(k for k in c if k not in order)
        if "FAILED" not in keys:
            keys.append("FAILED")
        return ", ".join(f"{c[k]} {k}" for k in keys)

    version = importlib.metadata.version("kosoku")
    return (f"Autobahn (kosoku {version}) against {server}: {len(results)} cases; "
            f"behaviour: {counts(behaviour)}; close: {counts(close)}")


@pytest.mark.timeout(RUN_TIMEOUT + 300)
def test_autobahn_fuzzing_client(tmp_path: Path) -> None:
    kind = support.CHECKED_SERVER
    server = support.start(tmp_path / "server", "autobahn_app:app", app_dir=support.HERE,
                           kind=kind)
    url = f"ws://{server.host}:{server.port}"
    try:
        try:
            results = asyncio.run(asyncio.wait_for(
                run_fuzzingclient(url, concurrency=CONCURRENCY), RUN_TIMEOUT))
        except FailureError as failure:
            results = failure.results
    finally:
        server.stop()

    from kosoku._report import write_reports  # the report writer `kosoku` (the CLI) uses
    out = REPORT_DIR / kind
    write_reports(results, str(out))
    line = summary_line(kind, results)
    (REPORT_DIR / f"summary-{kind}.txt").write_text(line + "\n")
    print(f"\n{line}\n(report: {out}/index.html)")

    bad = [r for r in results if r.behavior.value in ("FAILED", "ERROR")
           or r.behavior_close.value == "FAILED"]
    details = "\n".join(
        f"  {r.case_id}: {r.behavior.value} / close {r.behavior_close.value}: "
        f"{r.result} {r.result_close}" for r in bad)
    assert len(results) == TOTAL_CASES, f"{len(results)} cases ran, not {TOTAL_CASES}\n{line}"
    assert not bad, f"{len(bad)} cases failed\n{line}\n{details}"
