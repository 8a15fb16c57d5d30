"""Observability from the front end: Prometheus metrics, /healthz and /readyz on
--metrics-port, the access log (formats, file, SIGUSR1 reopen) and request ids."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request

import pytest

import rawhttp
from harness import Server, free_port

pytestmark = pytest.mark.uringapi_only

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[str, float]:
    """Every sample line as {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def observed(servers, tmp_path_factory) -> tuple[Server, int, str]:
    metrics_port = free_port()
    log = str(tmp_path_factory.mktemp("access") / "access.log")
    server = servers.start(
        "fastapi_app:app", workers=2, threads=2, probe_path="/json",
        extra_args=("--metrics-port", str(metrics_port), "--access-log-file", log,
                    "--access-log-format", "json", "--request-id", "--pid-file", log + ".pid"),
    )
    return server, metrics_port, log


def test_health_and_readiness(observed) -> None:
    _, port, _ = observed
    assert scrape(port, "/healthz")[0] == 200
    assert wait_for(lambda: scrape(port, "/readyz")[0] == 200, "/readyz to say ready")
    assert scrape(port, "/nope")[0] == 404


def test_request_counts_and_latency_after_known_traffic(observed) -> None:
    server, port, _ = observed
    before = samples(scrape(port)[1])
    with rawhttp.Connection(server.host, server.port) as c:
        for _ in range(5):
            assert c.request("GET", "/json").status == 200
        for _ in range(3):
            assert c.request("GET", "/status/404").status == 404
        r = c.request("POST", "/items", [("Content-Type", "application/json")],
                      body=b'{"name":"x","price":1.5}')
        assert r.status == 200, r.body
    # A request is counted just after its last byte is written, so the scrape may run a
    # moment before the last one is in: wait until it is (bounded), then compare exactly.
    def settled() -> dict[str, float] | None:
        now = samples(scrape(port)[1])
        key = "uringapi_request_duration_seconds_count"
        return now if now.get(key, 0) - before.get(key, 0) >= 9 else None

    after = wait_for(settled, "the nine requests to be counted")

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert delta('uringapi_requests_total{method="GET",status="200"}') == 5
    assert delta('uringapi_requests_total{method="GET",status="404"}') == 3
    assert delta('uringapi_requests_total{method="POST",status="200"}') == 1
    assert delta("uringapi_request_duration_seconds_count") == 9
    assert delta('uringapi_request_duration_seconds_bucket{le="+Inf"}') == 9
    assert delta("uringapi_request_duration_seconds_sum") > 0
    served = sum(v for k, v in after.items() if k.startswith("uringapi_worker_requests_served_total"))
    served_before = sum(v for k, v in before.items() if k.startswith("uringapi_worker_requests_served_total"))
    assert served - served_before == 9
    for w in ("0", "1"):
        assert after[f'uringapi_worker_ready{{worker="{w}"}}'] == 1
        assert after[f'uringapi_worker_in_flight{{worker="{w}"}}'] == 0
        assert after[f'uringapi_worker_rss_bytes{{worker="{w}"}}'] >= 0
    assert after["uringapi_worker_restarts_total"] == 0
    assert after["uringapi_doorbells_total"] > 0


def test_access_log_lines_carry_request_ids(observed) -> None:
    server, _, log = observed
    with rawhttp.Connection(server.host, server.port) as c:
        c.request("GET", "/items/41?q=log", [("User-Agent", 'evil" agent\\ \u00e9'),
                                               ("X-Request-ID", "client-chosen-id")])
        echoed = json.loads(c.request("GET", "/headers").body)["headers"]
    generated = [v for k, v in echoed if k == "x-request-id"]
    assert len(generated) == 1 and HEX32.match(generated[0]), echoed

    def lines() -> list[dict]:
        with open(log) as f:
            return [json.loads(line) for line in f if line.strip()]

    entries = wait_for(lambda: [e for e in lines() if e["target"] in ("/items/41?q=log", "/headers")]
                       if len(lines()) else None, "the access log lines")
    entries = wait_for(lambda: len([e for e in lines() if e["target"] in ("/items/41?q=log", "/headers")]) >= 2
                       and [e for e in lines() if e["target"] in ("/items/41?q=log", "/headers")],
                       "both access log lines")
    item = next(e for e in entries if e["target"] == "/items/41?q=log")
    assert item["method"] == "GET" and item["status"] == 200
    assert item["request_id"] == "client-chosen-id"
    # Quotes, backslashes and non-ASCII bytes are escaped, so the line cannot be forged.
    assert item["user_agent"] == 'evil" agent\\\\ \\xe9', item["user_agent"]
    headers = next(e for e in entries if e["target"] == "/headers")
    assert headers["request_id"] == generated[0]


def test_sigusr1_reopens_the_access_log(observed) -> None:
    """logrotate's way: move the file, then `kill -USR1 $(cat PIDFILE)`."""
    server, _, log = observed
    rotated = log + ".1"
    with rawhttp.Connection(server.host, server.port) as c:
        assert c.request("GET", "/items/1").status == 200
    wait_for(lambda: os.path.exists(log) and "/items/1" in open(log).read(), "the first line")
    os.rename(log, rotated)
    with open(log + ".pid") as f:
        pid = int(f.read())
    assert pid == server.proc.pid
    os.kill(pid, signal.SIGUSR1)
    wait_for(lambda: os.path.exists(log), "the reopened log file")
    with rawhttp.Connection(server.host, server.port) as c:
        assert c.request("GET", "/items/2").status == 200
    wait_for(lambda: "/items/2" in open(log).read(), "the line in the new file")
    assert "/items/2" not in open(rotated).read()


def test_without_request_id_flag_the_app_sees_no_generated_id(servers) -> None:
    server = servers.start("fastapi_app:app", probe_path="/json")
    with rawhttp.Connection(server.host, server.port) as c:
        echoed = json.loads(c.request("GET", "/headers").body)["headers"]
    assert not [k for k, _ in echoed if k == "x-request-id"]


def test_pid_file_is_refused_while_its_server_runs_and_removed_at_exit(servers, tmp_path) -> None:
    pid_file = str(tmp_path / "app.pid")
    first = servers.start("fastapi_app:app", probe_path="/json", extra_args=("--pid-file", pid_file))
    assert open(pid_file).read() == f"{first.proc.pid}\n"
    second = servers.spawn("fastapi_app:app", extra_args=("--pid-file", pid_file))
    assert second.proc.wait(timeout=30) == 1
    assert f"error: --pid-file {pid_file}: process {first.proc.pid}, named in it, is running" in second.stderr()
    assert open(pid_file).read() == f"{first.proc.pid}\n"
    assert first.stop() == 0
    assert not os.path.exists(pid_file)
