"""uringapi: ASGI apps served from an io_uring front end and separate uvloop workers.

Run ``uringapi serve module:app --workers N``. The front end (Rust) accepts connections and
parses HTTP; each worker process imports the app once and serves requests it reads from
shared memory. See the README for the architecture and every flag.

From Python, ``uringapi.run("main:app", workers=2)`` does the same as the command line.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("uringapi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", "run", "serve_args"]


def serve_args(app: str | None = None, **options: Any) -> list[str]:
    """The ``uringapi serve`` arguments for ``app`` and keyword options, spelled as on the
    command line with ``_`` for ``-``: ``workers=2`` → ``--workers 2``, ``access_log=True``
    → ``--access-log``, ``False``/``None`` → left out, a list or tuple → the flag repeated
    (``header=["x-a: 1", "x-b: 2"]``). ``uds_perms`` as an int is a mode: ``uds_perms=0o660``
    → ``--uds-perms 0o660``."""
    argv = ["serve"]
    if app is not None:
        if not isinstance(app, str):
            raise TypeError("uringapi.run takes the app as an import string, e.g. 'main:app' "
                            "(workers are separate processes that import it themselves)")
        argv.append(app)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif name == "uds_perms" and isinstance(value, int):
            argv += [flag, f"0o{value:o}"]
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def run(app: str | None = None, **options: Any) -> None:
    """Serves ``app`` (``"module:attr"``) until the server stops, like ``uvicorn.run``.

    The front end runs as a child process; this call returns when it exits and raises
    ``SystemExit`` with its exit code if that is not 0. SIGTERM, SIGINT and SIGHUP sent to
    this process are passed on to it (graceful drain, rolling restart), as if it were this
    process. Call it from the main thread.
    """
    import os
    import signal
    import subprocess
    import sys

    from uringapi.cli import FRONTEND, frontend_env

    proc = subprocess.Popen([str(FRONTEND), *serve_args(app, **options)], env=frontend_env(os.environ))
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda sig, _frame: proc.send_signal(sig)) for sig in forwarded}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        sys.exit(code)
