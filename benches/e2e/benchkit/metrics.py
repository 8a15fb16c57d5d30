"""uringapi's own counters around a measured window, from its Prometheus endpoint.

uringapi runs with ``--metrics-port`` in every benchmark run; the harness reads
``/metrics`` (plain HTTP on 127.0.0.1) just before and just after the measured
window and keeps the differences:

- ``uringapi_doorbells_total``: eventfd writes by the front end and the workers
  to wake a sleeping peer, i.e. the channel's syscalls. Divided by the requests
  the server counted in the window (``uringapi_requests_total``), it says how
  often a request had to wake someone: near 2 when every request finds its
  peer asleep (one doorbell each way), falling toward 0 under load, when peers
  are awake and polling.
- ``uringapi_worker_stalls_total``: workers marked stalled (``--stall-timeout``).

The supervisor republishes the process-wide counters (doorbells, stalls) every
100 ms, while the request counts are live; both reads wait `SETTLE_S` after the
load stops so that the two agree on an idle server.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from typing import Any

DOORBELLS = "uringapi_doorbells_total"
REQUESTS = "uringapi_requests_total"
STALLS = "uringapi_worker_stalls_total"
SETTLE_S = 0.3
"""Wait before each read: longer than the supervisor's 100 ms publishing period."""
TIMEOUT_S = 5.0


class MetricsError(Exception):
    pass


def parse(text: str) -> dict[str, float]:
    """Prometheus text format: the sum over all label sets of each metric name."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, rest = line.rpartition("}") if "}" in line else line.partition(" ")
        name = name_and_labels.split("{", 1)[0].strip()
        fields = rest.split()
        if not name or not fields:
            raise MetricsError(f"unreadable metrics line: {line!r}")
        try:
            value = float(fields[0])
        except ValueError as exc:
            raise MetricsError(f"unreadable metrics line: {line!r}") from exc
        totals[name] = totals.get(name, 0.0) + value
    return totals


def scrape(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise MetricsError(f"GET http://127.0.0.1:{port}/metrics: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise MetricsError(f"GET http://127.0.0.1:{port}/metrics: status {response.status}")
    return parse(body.decode(errors="replace"))


@dataclass(frozen=True)
class Window:
    """Counters read at the start of a measured window; `close` reads them again."""

    port: int
    before: dict[str, float]

    @classmethod
    def open(cls, port: int | None) -> Window | None:
        """None for a server without a metrics port (every server but uringapi).

        Every server waits the same `SETTLE_S` here, with or without metrics, so
        that the pause between warm-up and measurement is the same for all.
        """
        time.sleep(SETTLE_S)
        return None if port is None else cls(port, scrape(port))

    def close(self) -> dict[str, Any]:
        time.sleep(SETTLE_S)
        return channel_figures(self.before, scrape(self.port))


def channel_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The window's differences; a counter the server does not export is None."""

    def delta(name: str) -> int | None:
        if name not in before or name not in after:
            return None
        return round(after[name] - before[name])

    doorbells, requests = delta(DOORBELLS), delta(REQUESTS)
    per_request = round(doorbells / requests, 4) if doorbells is not None and requests else None
    return {
        "doorbells": doorbells,
        "server_requests": requests,
        "doorbells_per_request": per_request,
        "worker_stalls": delta(STALLS),
    }


def close(window: Window | None) -> dict[str, Any]:
    """Figures for a run row: empty for servers without metrics."""
    return {} if window is None else window.close()
