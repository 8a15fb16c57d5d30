"""Runs the HTTP/2 conformance suite (tests/conformance/h2suite) against a real `uringapi serve`:
once over h2c (prior knowledge, plain TCP) and once over TLS with ALPN h2 (a self-signed
certificate made with openssl). Prints each failure with its RFC section and what came
instead, then one summary line; exits 1 if any case failed.

    python tests/conformance/check_h2.py [--only TEXT] [--transport h2c|tls] [--bin PATH]

The server binary: --bin, else URINGAPI_BIN, else the `uringapi` beside this Python."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from h2suite import all_cases  # noqa: E402
from h2suite.wire import Deviation, Fail, Target  # noqa: E402

LISTEN_TIMEOUT = 30.0  # a bound on start-up, never a speed claim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary: str, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [binary, "serve", "h2spec_app:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "2", "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, cwd=HERE, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with {proc.returncode}:\n"
                             f"{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"error: the server did not listen on {port} within {LISTEN_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def certificate(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        raise SystemExit("error: openssl is needed for the TLS run\nhint: make tls-tools")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run the cases whose section or title contains this text")
    ap.add_argument("--transport", choices=["h2c", "tls"], action="append",
                    help="h2c, tls (default: both)")
    ap.add_argument("--times", action="store_true", help="print how long each case took")
    ap.add_argument("--bin", default=os.environ.get("URINGAPI_BIN")
                    or str(Path(sys.executable).parent / "uringapi"))
    args = ap.parse_args()
    binary = shutil.which(args.bin) or args.bin
    if not Path(binary).is_file():
        raise SystemExit(f"error: no uringapi binary at {args.bin}\nhint: make setup, or pass --bin")
    binary = str(Path(binary).resolve())  # the server runs from this folder
    cases = [c for c in all_cases()
             if not args.only or args.only in c.section or args.only in c.title]
    transports = args.transport or ["h2c", "tls"]
    started = time.monotonic()
    failed: list[str] = []
    deviations: list[str] = []
    passed = 0
    with tempfile.TemporaryDirectory(prefix="h2conf-") as tmpdir:
        tmp = Path(tmpdir)
        servers, targets = [], []
        try:
            for name in transports:
                port = free_port()
                extra: tuple[str, ...] = ()
                if name == "tls":
                    cert, key = certificate(tmp)
                    extra = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
                servers.append(start(binary, port, tmp / f"{name}.log", *extra))
                targets.append(Target(name, port, name == "tls"))
            for target in targets:
                for c in cases:
                    label = f"[{target.name}] {c.section}: {c.title}"
                    t0 = time.monotonic()
                    try:
                        c.run(target)
                        if c.deviation:
                            failed.append(f"{label}\n      passes now: remove its deviation "
                                          "mark and the README's line on it")
                        else:
                            passed += 1
                    except Deviation as e:
                        if c.deviation:
                            deviations.append(f"{label}\n      {e}: {c.deviation}")
                        else:
                            failed.append(f"{label}\n      {e}")
                    except Fail as e:
                        failed.append(f"{label}\n      {e}")
                    except Exception:  # noqa: BLE001 - a broken case is a failure too
                        failed.append(f"{label}\n      {traceback.format_exc().strip()}")
                    if args.times:
                        print(f"{time.monotonic() - t0:6.3f} s  {label}")
        finally:
            for proc in servers:
                stop(proc)
            for name in transports:
                log = tmp / f"{name}.log"
                text = log.read_text(errors="replace") if log.exists() else ""
                if "panicked" in text:
                    failed.append(f"[{name}] the server panicked:\n{text}")
    for line in deviations:
        print(f"KNOWN {line}")
    for line in failed:
        print(f"FAIL {line}")
    took = time.monotonic() - started
    print(f"h2 conformance: {len(cases)} cases x {len(transports)} transports "
          f"({', '.join(transports)}) in {took:.1f} s: {passed} passed, "
          f"{len(deviations)} known deviations, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
