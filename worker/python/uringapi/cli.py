"""The ``uringapi`` console script: execs the Rust front end shipped in this package.

The front end is its own executable (``uringapi/_bin/uringapi``, built with the wheel); the
``_native`` extension that workers load holds only the worker's end of the channels.
"""

import os
import sys
from pathlib import Path

FRONTEND = Path(__file__).resolve().parent / "_bin" / "uringapi"


def main() -> None:
    if not os.access(FRONTEND, os.X_OK):
        print(f"error: the uringapi front end is missing: {FRONTEND}", file=sys.stderr)
        print("hint: reinstall the package (`pip install .` or `make setup` builds it)", file=sys.stderr)
        sys.exit(2)
    # Workers are started with the interpreter that runs this script, so that they see the
    # same environment (the venv the user installed uringapi and the app into).
    os.environ.setdefault("URINGAPI_PYTHON", sys.executable)
    os.execv(FRONTEND, ["uringapi", *sys.argv[1:]])


if __name__ == "__main__":
    main()
