"""The results chart: throughput and CPU per request, grouped by cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from .runner import SERVER_ORDER

COLORS = {"native-ref": "#7f7f7f", "uringapi": "#d62728", "granian": "#1f77b4", "uvicorn": "#2ca02c"}
Doc = dict[str, Any]


def draw(doc: Doc, path: Path) -> None:
    medians: dict[str, dict[str, Any]] = doc["medians"]
    cells = list(medians)
    servers = [s for s in SERVER_ORDER if any(s in medians[c] for c in cells)]
    width = max(9.0, 1.5 * len(cells) + 3)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 8), sharex=True)
    _bars(top, medians, cells, servers, "rps", "requests/s, log scale\n(higher is better)", "{:,.0f}")
    _bars(
        bottom,
        medians,
        cells,
        servers,
        "cpu_us_per_req",
        "server CPU-µs per request,\nlog scale (lower is better)",
        "{:.0f}",
    )
    bottom.set_xticks(range(len(cells)), cells, rotation=15, ha="right")
    top.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=len(servers) or 1, fontsize=9, frameon=False)
    m, c = doc["machine"], doc["config"]
    rounds = f"{c['rounds']} round{'s' if c['rounds'] != 1 else ''}"
    fig.suptitle(
        f"uringapi end-to-end benchmark, {doc['date']} ({doc['mode']} run)\n"
        f"{m['nproc']} CPUs, {c['workers']} workers per server, wrk -c{c['connections']}; "
        f"median of {rounds} × {c['duration_s']} s, whiskers span min–max",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Axes, medians: dict[str, Any], cells: list[str], servers: list[str], key: str, label: str, fmt: str
) -> None:
    width = 0.8 / max(1, len(servers))
    lowest = float("inf")
    for i, server in enumerate(servers):
        points = [(x, medians[cell][server]) for x, cell in enumerate(cells) if _has(medians[cell], server, key)]
        if not points:
            continue
        xs = [x - 0.4 + width * (i + 0.5) for x, _ in points]
        values = [m[key] for _, m in points]
        lowest = min(lowest, *values)
        spread = list(zip(*(_spread(m, key) for _, m in points), strict=True))
        bars = ax.bar(xs, values, width, label=server, color=COLORS.get(server), yerr=spread, capsize=2)
        ax.bar_label(bars, [fmt.format(v) for v in values], label_type="center", rotation=90, color="white", fontsize=8)
    # Log scale: native-ref and the file cell are an order of magnitude away
    # from the rest, which would flatten every other bar on a linear axis.
    ax.set_yscale("log")
    if lowest < float("inf"):
        ax.set_ylim(bottom=lowest / 4)  # room for the shortest bar and its label
    ax.set_ylabel(label)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)


def _has(by_server: dict[str, Any], server: str, key: str) -> bool:
    return server in by_server and by_server[server].get(key) is not None


def _spread(m: dict[str, Any], key: str) -> tuple[float, float]:
    """Distances from the median down to the round minimum and up to the maximum."""
    value = m[key]
    low = m.get(f"{key}_min")
    high = m.get(f"{key}_max")
    return (value - low if low is not None else 0.0, high - value if high is not None else 0.0)
