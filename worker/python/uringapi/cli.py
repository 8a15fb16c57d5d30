"""The ``uringapi`` console script: runs the Rust front end in this process."""

import os
import signal
import sys

from uringapi import _native


def main() -> None:
    # Workers are started with the interpreter that runs this script, so that they see the
    # same environment (the venv the user installed uringapi and the app into).
    os.environ.setdefault("URINGAPI_PYTHON", sys.executable)
    # The front end owns SIGINT/SIGTERM. Restore the defaults so that Python's own handler
    # does not raise KeyboardInterrupt once the front end has already shut down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(_native.run_cli(["uringapi", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
