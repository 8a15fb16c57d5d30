"""Server CPU and wall time of streamed responses, for A/B runs of the response window
(protocol ring.rs rule 7, `RESPONSE_WINDOW`).

One worker serves benches/e2e/apps/stream_pieces.py; curl fetches, three times each,
3 x 1 GiB in 1 MiB pieces and 3 x 50,000 pieces of 100 bytes. Printed per line: the label,
the case, the wall time and the CPU ticks (1/100 s) of the front end and its worker.

    .venv/bin/python benches/e2e/stream_window_ab.py LABEL [ROUNDS] [EXE]

EXE: a front-end executable to run instead of .venv's (a copy of another build's
worker/python/uringapi/_bin/uringapi, for A/B runs of front-end changes); its workers
come from .venv.

The A/B of 2026-12-06 (benches/results/ab-response-window-2026-12-06.txt) ran it on one
build, alternating: as built (label w8) and with the worker's `Cycle.window` set to
`1 << 30` (label none: the worker ignores the window; the front end still sends its
credit records). The A/B of 2026-12-07 (benches/results/ab-response-gather-2026-12-07.txt)
ran two front ends, alternating: before and after small pieces queued behind one being
written went out in the same write (http1/conn/download.rs `gather`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv/bin/uringapi"
PORT = 18790
CASES = [("big", "/big?k=1024"), ("small", "/small?k=50000")]


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def server_ticks(front: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(front)], capture_output=True, text=True).stdout
    return sum(ticks(p) for p in [front, *map(int, out.split())])


def run(label: str, exe: Path) -> None:
    for case, target in CASES:
        server = subprocess.Popen(
            [exe, "serve", "stream_pieces:app", "--app-dir", str(ROOT / "benches/e2e/apps"),
             "--port", str(PORT), "--workers", "1", "--python", str(ROOT / ".venv/bin/python")],
            stderr=subprocess.DEVNULL)
        try:
            time.sleep(2.5)
            url = f"http://127.0.0.1:{PORT}{target}"
            subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)  # warm-up
            cpu0, t0 = server_ticks(server.pid), time.monotonic()
            for _ in range(3):
                subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)
            cpu, wall = server_ticks(server.pid) - cpu0, time.monotonic() - t0
            print(f"{label} {case} wall {wall:.2f} s, server cpu {cpu} ticks", flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()


if __name__ == "__main__":
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        run(sys.argv[1], Path(sys.argv[3]) if len(sys.argv) > 3 else BIN)
