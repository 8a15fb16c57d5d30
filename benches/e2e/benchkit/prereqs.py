"""Install and build what a benchmark run needs: Python packages, wrk, h2load, oha, the
fixed-rate generator and the static file served by the Starlette app."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import paths

CARGO_BIN = Path.home() / ".cargo" / "bin"


class SetupError(Exception):
    """A prerequisite is missing and could not be installed."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def ensure_requirements() -> None:
    """pip-install benches/requirements.txt into the venv (a no-op when satisfied)."""
    if not paths.VENV_PYTHON.exists():
        raise SetupError(
            f"no virtualenv at {paths.VENV}",
            f"create it: python3 -m venv {paths.VENV}",
        )
    cmd = [str(paths.VENV_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(paths.REQUIREMENTS)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(
            f"pip install -r {paths.REQUIREMENTS} failed:\n{done.stderr.strip()}",
            "check network access to PyPI, then re-run",
        )


def ensure_wrk() -> str:
    """Path of wrk; installed with apt-get when missing and running as root."""
    return ensure_tool("wrk", "wrk")


def ensure_h2load(install: bool = True) -> str:
    """Path of h2load (the HTTP/2 cell's load generator), from Debian's nghttp2-client."""
    return ensure_tool("h2load", "nghttp2-client", install)


def ensure_tool(name: str, package: str, install: bool = True) -> str:
    """Path of `name`; `package` installed with apt-get when missing, `install` and running as root."""
    found = shutil.which(name)
    if found:
        return found
    if not install or os.geteuid() != 0:
        raise SetupError(f"{name} is not installed", f"install it: sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SetupError(
                f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}",
                f"install {package} by hand (apt-get install -y {package}) and re-run",
            )
    found = shutil.which(name)
    if not found:
        raise SetupError(f"apt-get installed {package} but {name} is not on PATH", "check PATH")
    return found


def ensure_oha(install: bool = True) -> str:
    """Path of oha (crates.io), the open-loop generator ours is checked against;
    `cargo install --locked oha` (into ~/.cargo/bin) when missing and `install`."""
    found = shutil.which("oha") or _existing(CARGO_BIN / "oha")
    if found:
        return found
    cargo = shutil.which("cargo") or _existing(CARGO_BIN / "cargo")
    if not install or cargo is None:
        raise SetupError("oha is not installed", "install it: cargo install --locked oha")
    done = subprocess.run([cargo, "install", "--locked", "oha"], capture_output=True, text=True)
    found = _existing(CARGO_BIN / "oha") or shutil.which("oha")
    if done.returncode != 0 or found is None:
        raise SetupError(
            f"`cargo install --locked oha` failed:\n{done.stderr.strip()[-2000:]}",
            "install it by hand (cargo install --locked oha) and re-run",
        )
    return found


def find_rustc() -> str | None:
    return shutil.which("rustc") or _existing(Path.home() / ".cargo" / "bin" / "rustc")


def build_loadgen() -> Path:
    """Compile the open-loop generator with plain rustc; cached by source hash."""
    return _build_rust_tool(paths.LOADGEN_SOURCE, "fixed_rate", "the fixed-rate generator")


def build_ws_echo() -> Path:
    """Compile the WebSocket echo client (loadgen/ws_echo.rs); cached by source hash."""
    return _build_rust_tool(paths.WS_ECHO_SOURCE, "ws_echo", "the WebSocket echo client")


def _build_rust_tool(source_path: Path, name: str, what: str) -> Path:
    rustc = find_rustc()
    if rustc is None:
        raise SetupError(f"rustc not found, cannot build {what}", "install Rust (rustup)")
    # The tools share modules beside them (`mod epoll;` finds loadgen/epoll.rs), so the
    # cache key covers every Rust file in the folder, not only the tool's own.
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(source_path.parent.glob("*.rs"))))
    digest = digest.hexdigest()[:16]
    binary = paths.WORK_DIR / "bin" / f"{name}-{digest}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    cmd = [rustc, "-O", "--edition", "2021", "-o", str(tmp), str(source_path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"building {what} failed:\n{done.stderr}", " ".join(cmd))
    tmp.rename(binary)
    return binary


def write_static_file() -> Path:
    """Write the Starlette app's 100 KiB file; returns its folder (BENCH_STATIC_DIR)."""
    sys.path.insert(0, str(paths.APPS_DIR))
    try:
        from starlette_files import FILE_NAME, payload
    finally:
        sys.path.remove(str(paths.APPS_DIR))
    folder = paths.WORK_DIR / "static"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILE_NAME
    data = payload()
    if not target.exists() or target.read_bytes() != data:
        target.write_bytes(data)
    return folder


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None
