"""Where things live. Everything is derived from the repository root."""

from __future__ import annotations

from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent.parent
REPO = E2E_DIR.parent.parent
APPS_DIR = E2E_DIR / "apps"
LOADGEN_SOURCE = E2E_DIR / "loadgen" / "fixed_rate.rs"
WS_ECHO_SOURCE = E2E_DIR / "loadgen" / "ws_echo.rs"
WRK_REPORT_LUA = E2E_DIR / "wrk" / "report.lua"
REQUIREMENTS = REPO / "benches" / "requirements.txt"
RESULTS_DIR = REPO / "benches" / "results"
README = REPO / "README.md"
VENV = REPO / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
# Build products, generated files and server logs. target/ is git-ignored.
WORK_DIR = REPO / "target" / "bench-e2e"
