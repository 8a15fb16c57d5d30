"""asgion (an outside ASGI protocol validator, PyPI `asgion`) watches uringapi from inside the
worker: each test app is wrapped in asgion's Inspector (asgion_app.py), real traffic goes
through `uringapi serve`, and every violation asgion records is sorted by who caused it.

asgion tags each violation with the phase it was found in. `scope` (the scope dict the
server built) and `receive` (a message the server handed to the app) are the server's
doing: any such violation fails the check, unless INFORMATIONAL below names it with a
reason. `send` and `complete` (what the app sent, and how it ended) are the app's: the
probe app misbehaves on purpose, and the check asserts asgion saw those faults too, which
shows that the validator really ran in the worker.

Needs Python >= 3.12 (asgion's floor); run by `make conformance` in its own venv.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from support import HERE, HOST, get, request, start, status

from asgion.rules import RULES

SERVER_PHASES = {"scope", "receive"}
#: Server-phase findings that are notes, not faults: rule id -> reason.
INFORMATIONAL = {
    "LF-010": "INFO: 'lifespan state is available'. ASGI lifespan spec 2.3 defines scope['state'];"
              " asgion notes its presence, it does not call it wrong.",
}

BIG = bytes(range(256)) * 1024


def raw(method: str, target: str, headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: conformance", "Connection: close",
             *(f"{k}: {v}" for k, v in headers)]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


PROBE_TRAFFIC = [
    raw("GET", "/record"),
    raw("GET", "/record/caf%C3%A9/a%2Fb?x=1&y=%20z"),
    raw("GET", "/record", version="HTTP/1.0"),
    raw("GET", "/record", (("X-Dup", "1"), ("x-dup", "2"), ("X-Empty", ""))),
    raw("POST", "/record", body=b"hello=world"),
    raw("POST", "/record", (("Transfer-Encoding", "chunked"),), b"5\r\nhello\r\n0\r\n\r\n"),
    raw("PUT", "/record", body=BIG),
    raw("HEAD", "/record"),
    raw("POST", "/record", (("Expect", "100-continue"),), b"ping"),
    raw("GET", "/fixed?n=100"),
    raw("HEAD", "/fixed?n=100"),
    raw("GET", "/stream?chunks=20&size=1000"),
    raw("GET", "/stream?chunks=3&size=5&cl=1"),
    raw("GET", "/stream?chunks=3&size=5", version="HTTP/1.0"),
    raw("GET", "/disconnect-after-complete"),
]
#: Probes that break the protocol on the app's side, and the rule asgion must report.
PROBE_APP_FAULTS = {
    "/body-before-start": "HF-002",
    "/start-twice?flush=1": "HF-003",
    "/send-after-complete": "HF-004",
    "/return-incomplete": "HF-006",
    "/raise-before-start": "HF-001",
    "/return-before-start": "HF-001",
}


def drive_probe(port: int) -> int:
    for r in PROBE_TRAFFIC:
        assert status(request(port, r)) < 500, r[:80]
    for target in PROBE_APP_FAULTS:
        request(port, raw("GET", target))
    # A client that leaves while the app waits in receive() after the body.
    s = socket.create_connection((HOST, port), timeout=30)
    s.sendall(raw("POST", "/wait-disconnect", body=b"12345"))
    time.sleep(0.5)
    s.close()
    return len(PROBE_TRAFFIC) + len(PROBE_APP_FAULTS) + 1


def drive_fastapi(port: int) -> int:
    calls = [get(port, "/json"), get(port, "/items/3?q=x&limit=2"),
             get(port, "/items", "POST", json.dumps({"name": "a", "price": 1.5}).encode(),
                 (("Content-Type", "application/json"),)),
             get(port, "/echo", "POST", BIG), get(port, "/stream?n=50"), get(port, "/big"),
             get(port, "/state"), get(port, "/headers"), get(port, "/status/204"),
             get(port, "/status/304"), get(port, "/json", "HEAD")]
    assert all(status(c) < 500 for c in calls)
    assert status(get(port, "/boom")) == 500
    return len(calls) + 1


def drive_litestar(port: int) -> int:
    calls = [get(port, "/"), get(port, "/items/1?q=a"), get(port, "/greet"),
             get(port, "/session?tag=x"),
             get(port, "/items", "POST", json.dumps({"name": "a", "price": 1.5}).encode(),
                 (("Content-Type", "application/json"),)),
             get(port, "/file"), get(port, "/file", "HEAD"), get(port, "/stream?n=20"),
             get(port, "/teapot"), get(port, "/background?tag=y")]
    assert all(status(c) < 500 for c in calls)
    assert status(get(port, "/boom")) == 500
    return len(calls) + 1


APPS = {
    "probe_app:app": (drive_probe, "/fixed"),
    "fastapi_app:app": (drive_fastapi, "/json"),
    "litestar_app:app": (drive_litestar, "/"),
}
#: Open uringapi bugs a case finds (strict xfail: it turns red once fixed).
KNOWN_BUGS: dict[str, str] = {}  # none open


def load_traces(trace_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(trace_dir.glob("*.json"))]


def known_bug(target: str) -> list[pytest.MarkDecorator]:
    if target not in KNOWN_BUGS:
        return []
    return [pytest.mark.xfail(strict=True, reason=f"known uringapi bug: {KNOWN_BUGS[target]}")]


@pytest.mark.parametrize("target", [pytest.param(t, marks=known_bug(t)) for t in APPS])
def test_asgion_finds_no_server_violation(tmp_path: Path, target: str) -> None:
    drive, probe_path = APPS[target]
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    events = tmp_path / "events.log"
    server = start(tmp_path / "server", "asgion_app:app", app_dir=HERE, probe_path=probe_path,
                   env={"ASGION_TARGET": target, "ASGION_TRACE_DIR": str(trace_dir),
                        "URINGAPI_TEST_EVENT_LOG": str(events)},
                   extra=("--timeout-graceful-shutdown", "5"))
    try:
        sent = drive(server.port)
        time.sleep(1.0)  # background tasks and the abandoned request finish
    finally:
        code = server.stop()
    assert code == 0, server.stderr_tail()

    traces = load_traces(trace_dir)
    kinds = Counter(t["scope"]["type"] for t in traces)
    # Every request was traced (plus the readiness probe), and the lifespan too: asgion
    # really ran inside the worker, and every request ended there. A request whose app
    # task never ends leaves no trace.
    traced = sorted(f'{t["scope"]["method"]} {t["scope"]["path"]}' for t in traces
                    if t["scope"]["type"] == "http")
    assert kinds["http"] >= sent + 1, (
        f"{sent + 1 - kinds['http']} request(s) never finished in the worker; traced: {traced}")
    assert kinds["lifespan"] == 1, kinds

    server_side, app_side, notes = [], Counter(), Counter()
    for t in traces:
        for v in t["summary"]["violations"]:
            where = f'{t["scope"]["type"]} {t["scope"]["method"]} {t["scope"]["path"]}'
            if v["phase"] not in SERVER_PHASES:
                app_side[v["rule_id"]] += 1
            elif v["rule_id"] in INFORMATIONAL:
                notes[v["rule_id"]] += 1
            else:
                rule = RULES.get(v["rule_id"])
                server_side.append(f'{v["rule_id"]} ({rule.severity if rule else "?"}) '
                                   f'{rule.summary if rule else ""} in phase {v["phase"]}: {where}')
    details = (trace_dir / "violations.jsonl")
    print(f"\n{target}: {len(traces)} traces {dict(kinds)}; server-side violations: "
          f"{len(server_side)}; informational: {dict(notes)}; app-side: {dict(app_side)}")
    assert not server_side, "asgion found server-side violations:\n" + "\n".join(server_side) + (
        "\n--- details ---\n" + details.read_text() if details.exists() else "")
    if target == "probe_app:app":
        missing = set(PROBE_APP_FAULTS.values()) - set(app_side)
        assert not missing, f"asgion did not report the probe's own faults {missing}: {app_side}"
