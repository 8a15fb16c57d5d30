"""The servers under test: how to start each one, and whether it is installed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import paths, tlscert
from .cells import Cell


@dataclass(frozen=True)
class Settings:
    """Knobs shared by every server in a run, so the comparison stays fair."""

    workers: int
    threads: int
    """uringapi front-end threads (also native-ref's threads)."""
    extra: tuple[str, ...] = ()
    """Server-specific options chosen by the config search (`search.py`), e.g. granian's
    `--runtime-mode st`."""


POLICIES = ("other", "batch")
"""Scheduling policies every server runs under: SCHED_OTHER (the kernel's default) and
SCHED_BATCH (a woken thread does not preempt the running one). uringapi sets its own with
`--sched normal|batch`; every other server, native-ref included, is started under
`chrt --other 0` or `chrt --batch 0`, which its processes and threads inherit."""
GC_FREEZE_APP = "gc_frozen:app"
"""uringapi's worker calls gc.freeze() after lifespan startup; peers get the same after
importing the app through `apps/gc_frozen.py` (see there)."""
GC_FREEZE_ENV = "BENCH_GC_FREEZE_TARGET"


CommandBuilder = Callable[[str, Cell, int, Settings], list[str]]


def _native_ref(exe: str, cell: Cell, port: int, s: Settings) -> list[str]:
    return [exe, "native-ref", *_bind(port), "--threads", str(s.threads), "--log-level", "warning", *s.extra]


def _uringapi(exe: str, cell: Cell, port: int, s: Settings) -> list[str]:
    return [
        exe, "serve", cell.target, *_bind(port),
        "--workers", str(s.workers), "--threads", str(s.threads),
        "--app-dir", str(paths.APPS_DIR), "--log-level", "warning",
        *[a.replace("=static", f"={paths.APPS_DIR / 'static'}") for a in cell.uringapi_args],
        *_tls(("--ssl-certfile", "--ssl-keyfile"), cell),
        *s.extra,
    ]  # fmt: skip


def _granian(exe: str, cell: Cell, port: int, s: Settings) -> list[str]:
    # --http 1: the benchmark speaks HTTP/1.1; "auto" would also sniff for h2c.
    return [
        exe, "--interface", "asgi", "--loop", "uvloop", "--http", "1",
        "--workers", str(s.workers), *_bind(port),
        "--working-dir", str(paths.APPS_DIR), "--log-level", "warning",
        *_tls(("--ssl-certificate", "--ssl-keyfile"), cell), GC_FREEZE_APP,
        *s.extra,
    ]  # fmt: skip


def _uvicorn(exe: str, cell: Cell, port: int, s: Settings) -> list[str]:
    return [
        exe, GC_FREEZE_APP, *_bind(port), "--app-dir", str(paths.APPS_DIR),
        "--loop", "uvloop", "--http", "httptools", "--workers", str(s.workers),
        "--no-access-log", "--log-level", "warning",
        *_tls(("--ssl-certfile", "--ssl-keyfile"), cell),
        *s.extra,
    ]  # fmt: skip


def uringapi_tls_args(cell: Cell) -> list[str]:
    """uringapi's certificate and key flags for an HTTPS cell (none for the others)."""
    return _tls(("--ssl-certfile", "--ssl-keyfile"), cell)


def _tls(flags: tuple[str, str], cell: Cell) -> list[str]:
    """The certificate and key flags of a server (cert flag, key flag) for an HTTPS cell."""
    if not cell.tls:
        return []
    cert, key = tlscert.files()
    return [flags[0], str(cert), flags[1], str(key)]


def _bind(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


@dataclass(frozen=True)
class Server:
    name: str
    distribution: str
    """Python distribution that installs the executable (and names its version)."""
    executable: str
    """File name in the venv's bin/."""
    build: CommandBuilder
    serves_apps: bool = True
    """False for native-ref, which serves its fixed response and no Python app."""
    metrics_flag: str | None = None
    """Option that serves Prometheus metrics on a port (uringapi: --metrics-port)."""
    sched_flag: str | None = None
    """Option that sets the scheduling policy (uringapi: --sched); others run under chrt."""
    freezes_gc: bool = False
    """The server's worker calls gc.freeze() itself (uringapi); others get apps/gc_frozen.py."""
    options: tuple[tuple[str, tuple[str | None, ...]], ...] = ()
    """Options the config search tries besides workers/threads, each with its values; the
    first is what the server gets without search (None: the option is left out)."""
    searches_workers: bool = True
    searches_threads: bool = False

    def help_text(self) -> str:
        """`--help` of the installed version, to leave out options it lacks."""
        try:
            done = subprocess.run([str(self.binary), "--help"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout + done.stderr

    @property
    def binary(self) -> Path:
        return paths.VENV_BIN / self.executable

    def missing(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.binary.exists():
            return None
        if self.distribution == "uringapi":
            how = "build and install uringapi into .venv first"
        else:
            how = f"pip install -r {paths.REQUIREMENTS}"
        return f"{self.binary} not found; {how}"

    def runs(self, cell: Cell) -> bool:
        if cell.native_route:
            return self.name in ("uringapi", "native-ref")
        return self.serves_apps or cell.reference

    def command(
        self, cell: Cell, port: int, settings: Settings, metrics_port: int | None = None, policy: str = "batch"
    ) -> list[str]:
        cmd = self.build(str(self.binary), cell, port, settings)
        if metrics_port is not None and self.metrics_flag is not None:
            cmd += [self.metrics_flag, str(metrics_port)]
        if self.sched_flag is not None:
            return [*cmd, self.sched_flag, "normal" if policy == "other" else policy]
        return ["chrt", f"--{policy}", "0", *cmd]

    def env(self, cell: Cell) -> dict[str, str]:
        """Environment for one run: peers import the cell's app through gc_frozen."""
        if self.freezes_gc or not self.serves_apps:
            return {}
        return {GC_FREEZE_ENV: cell.target}

    def gc_note(self) -> str:
        if not self.serves_apps:
            return "no Python"
        if self.freezes_gc:
            return "gc.freeze() in each worker after lifespan startup (its own)"
        return "gc.freeze() in each worker after importing the app (apps/gc_frozen.py)"

    def version(self) -> str:
        """Installed version, or 'unknown'; never raises."""
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            pass
        try:
            out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        words = out.stdout.split()
        return words[-1] if out.returncode == 0 and words else "unknown"


SERVERS: tuple[Server, ...] = (
    Server("native-ref", "uringapi", "uringapi", _native_ref, serves_apps=False, searches_workers=False,
           searches_threads=True),
    Server(
        "uringapi", "uringapi", "uringapi", _uringapi, metrics_flag="--metrics-port", sched_flag="--sched",
        freezes_gc=True, searches_threads=True,
    ),
    Server(
        "granian", "granian", "granian", _granian,
        options=(
            ("--runtime-mode", (None, "st", "mt")),
            ("--runtime-threads", (None, "1", "2")),
            ("--backpressure", (None, "64", "256")),
        ),
    ),
    Server("uvicorn", "uvicorn", "uvicorn", _uvicorn),
)
BASELINE = "granian"
"""Throughput ratios in the report are relative to this server."""


def select(names: list[str] | None) -> list[Server]:
    if names is None:
        return list(SERVERS)
    known = {s.name for s in SERVERS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown server {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [s for s in SERVERS if s.name in names]


class Unusable(ValueError):
    """A server a script was asked for and cannot run; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def select_runnable(names_csv: str) -> list[Server]:
    """The servers a script's comma list names, each installed; Unusable otherwise."""
    try:
        chosen = select([n.strip() for n in names_csv.split(",") if n.strip()])
    except ValueError as exc:
        raise Unusable(str(exc), "see --help") from exc
    missing = [f"{s.name}: {s.missing()}" for s in chosen if s.missing()]
    if missing:
        raise Unusable("; ".join(missing), "make setup")
    return chosen
