"""The ``uringapi`` console script: execs the Rust front end shipped in this package.

The front end is its own executable (``uringapi/_bin/uringapi``, built with the wheel); the
``_native`` extension that workers load holds only the worker's end of the channels.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

FRONTEND = Path(__file__).resolve().parent / "_bin" / "uringapi"


def frontend_env(env: Mapping[str, str]) -> dict[str, str]:
    """The front end's environment: workers are started with the interpreter that runs this
    code, so that they see the same environment (the venv uringapi and the app are in)."""
    out = dict(env)
    out.setdefault("URINGAPI_PYTHON", sys.executable)
    return out


def main() -> None:
    if not os.access(FRONTEND, os.X_OK):
        print(f"error: the uringapi front end is missing: {FRONTEND}", file=sys.stderr)
        print("hint: reinstall the package (`pip install .` or `make setup` builds it)", file=sys.stderr)
        sys.exit(2)
    os.execve(FRONTEND, ["uringapi", *sys.argv[1:]], frontend_env(os.environ))


if __name__ == "__main__":
    main()
