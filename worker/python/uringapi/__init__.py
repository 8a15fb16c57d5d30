"""uringapi: ASGI apps served from an io_uring front end and separate uvloop workers.

Run ``uringapi serve module:app --workers N``. The front end (Rust) accepts connections and
parses HTTP; each worker process imports the app once and serves requests it reads from
shared memory. See the README for the architecture and every flag.

From Python, ``uringapi.run("main:app", workers=2)`` does the same as the command line;
``uringapi.run(app)`` with the app object works too, as with ``uvicorn.run``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("uringapi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", "run", "serve_args"]


#: Switches that are on by default (or may be, as colours): ``False`` turns them off with
#: their ``--no-`` flag, as ``uvicorn.run(server_header=False)`` does; left out, they would
#: stay on.
_NEGATABLE = frozenset({"access_log", "use_colors", "server_header", "date_header", "proxy_headers"})
#: Options whose value is true or false.
_BOOLEAN_VALUED = frozenset({"ws_per_message_deflate"})
#: uvicorn.run's keyword names for options spelled otherwise here.
_UVICORN_NAMES = {"headers": "header", "reload_dirs": "reload_dir", "reload_includes": "reload_include",
                  "reload_excludes": "reload_exclude"}
#: uvicorn.run takes the log level as a number of the logging module too.
_LOG_LEVELS = {50: "critical", 40: "error", 30: "warning", 20: "info", 10: "debug", 5: "trace"}


def serve_args(app: str | None = None, **options: Any) -> list[str]:
    """The ``uringapi serve`` arguments for ``app`` and keyword options, spelled as on the
    command line with ``_`` for ``-``: ``workers=2`` → ``--workers 2``, ``access_log=True``
    → ``--access-log``, ``None`` → left out, ``False`` → left out, or the ``--no-`` flag of a
    switch that is on by default (``server_header=False`` → ``--no-server-header``), a list
    or tuple → the flag repeated (``header=["x-a: 1", "x-b: 2"]``). uvicorn.run's spellings
    are taken too: ``headers=[("x-a", "1")]``, ``reload_dirs``/``_includes``/``_excludes``,
    ``log_level=logging.DEBUG``, ``forwarded_allow_ips`` as a list, ``ssl_cert_reqs`` as
    ``ssl.CERT_REQUIRED``. ``uds_perms`` as an int is a mode: ``uds_perms=0o660`` →
    ``--uds-perms 0o660``."""
    argv = ["serve"]
    if app is not None:
        if not isinstance(app, str):
            raise TypeError("serve_args takes the app as an import string, e.g. 'main:app'; "
                            "uringapi.run also takes the app object")
        argv.append(app)
    for name, value in options.items():
        if name == "headers":  # uvicorn.run's form: [(name, value), ...]
            value = [f"{h[0]}:{h[1]}" if isinstance(h, (list, tuple)) else h for h in value or ()]
        name = _UVICORN_NAMES.get(name, name)
        if name == "log_level" and isinstance(value, int):
            value = _LOG_LEVELS.get(value, value)
        elif name == "forwarded_allow_ips" and isinstance(value, (list, tuple)):
            value = ",".join(value)  # one comma-separated value, not a repeated flag
        flag = "--" + name.replace("_", "-")
        if isinstance(value, dict):
            raise TypeError(f"{name}: a dict is taken by uringapi.run only (log_config), not here")
        if name in _BOOLEAN_VALUED and isinstance(value, bool):
            argv += [flag, "true" if value else "false"]
        elif value is None or (value is False and name not in _NEGATABLE):
            continue
        elif value is False:
            argv.append("--no-" + flag[2:])
        elif value is True:
            argv.append(flag)
        elif name == "uds_perms" and isinstance(value, int):
            argv += [flag, f"0o{value:o}"]
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, int):
            argv += [flag, str(int(value))]  # an IntEnum (ssl.CERT_REQUIRED) as its number
        else:
            argv += [flag, str(value)]
    return argv


def run(app: str | None = None, **options: Any) -> None:
    """Serves ``app`` (``"module:attr"``) until the server stops, like ``uvicorn.run``.

    ``app`` may also be the app object (or, with ``factory=True``, the factory) as
    ``uvicorn.run(app)`` takes it: workers are separate processes that import the app
    themselves, so the object is looked up among the loaded modules (the running script
    first) and the workers import that module from its folder (``app_dir``, unless given).
    The script is then imported by its file name, so the call must sit under
    ``if __name__ == "__main__":``.

    The front end runs as a child process; this call returns when it exits and raises
    ``SystemExit`` with its exit code if that is not 0. SIGTERM, SIGINT, SIGQUIT and SIGHUP
    sent to this process are passed on to it (graceful drain, quick shutdown, rolling
    restart), as if it were this process. Call it from the main thread.
    """
    import os

    if os.environ.get("URINGAPI_SEGMENT_FD"):
        # Only a worker has it: the app's module called run() while a worker imported it.
        raise RuntimeError("uringapi.run() was called while a uringapi worker imported the app; "
                           "call it under `if __name__ == \"__main__\":` so that importing the "
                           "module does not start another server")
    if app is not None and not isinstance(app, str):
        app, app_dir = _import_string(app)
        if app_dir is not None:
            options.setdefault("app_dir", app_dir)
    with _log_config_file(options.get("log_config")) as path:
        if path is not None:
            options["log_config"] = path
        _run_front_end(serve_args(app, **options))


def _run_front_end(argv: list[str]) -> None:
    import os
    import signal
    import subprocess
    import sys

    from uringapi.cli import FRONTEND, frontend_env

    proc = subprocess.Popen([str(FRONTEND), *argv], env=frontend_env(os.environ))
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda sig, _frame: proc.send_signal(sig)) for sig in forwarded}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        sys.exit(code)


def _import_string(app: Any) -> tuple[str, str | None]:
    """Where a worker finds the object ``app`` that this process holds: ``"module:attr"``
    and the folder to import the module from (None: the workers' default, the current
    folder). The running script (``__main__``) is searched first and named by its file;
    then every other loaded module. TypeError when no module holds it."""
    import sys

    main = sys.modules.get("__main__")
    others = [m for name, m in list(sys.modules.items()) if name != "__main__"]
    for module in [main, *others]:
        attrs = getattr(module, "__dict__", None)
        if not isinstance(attrs, dict):
            continue
        attr = next((k for k, v in list(attrs.items()) if v is app and not k.startswith("__")), None)
        if attr is None:
            continue
        origin = _module_origin(module, main)
        if origin is not None:
            return f"{origin[0]}:{attr}", origin[1]
    raise TypeError(f"uringapi.run could not find {app!r} in any module it could import: workers are "
                    "separate processes that import the app themselves, so it must be a module-level "
                    "name; or pass it as an import string, e.g. uringapi.run('main:app')")


def _module_origin(module: Any, main: Any) -> tuple[str, str | None] | None:
    """The name a worker imports ``module`` by, and the folder it is found from."""
    import os
    import sys

    file = getattr(module, "__file__", None)
    if not file:
        return None  # built in, or code given to `python -c`: nothing to import
    spec = getattr(module, "__spec__", None)
    if module is main and (spec is None or not spec.name or spec.name == "__main__"):
        # `python path/to/main.py`: the script is the module `main` of its folder.
        name = os.path.splitext(os.path.basename(file))[0]
    else:
        name = spec.name if module is main else module.__name__  # `python -m pkg.main`
    root = os.path.dirname(os.path.abspath(file))
    package = os.path.basename(file).startswith("__init__.")  # the folder is the module
    levels = name.count(".") + (1 if package else 0)
    for _ in range(levels):
        root = os.path.dirname(root)
    # A folder on the interpreter's own path (site-packages) is on the workers' too.
    return name, (None if root in sys.path[1:] and root != sys.path[0] else root)


@contextmanager
def _log_config_file(config: Any) -> Iterator[str | None]:
    """``log_config`` as ``uvicorn.run`` also takes it, a dictConfig dict: written to a JSON
    file the workers read (a replacement worker too, so it lives as long as the server)."""
    if not isinstance(config, dict):
        yield None
        return
    import json
    import os
    import tempfile

    try:
        text = json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"log_config: the workers are separate processes and read it as JSON, "
                        f"which this dict cannot be written as ({exc}); pass the path of a "
                        "JSON, YAML or .ini file instead") from exc
    fd, path = tempfile.mkstemp(prefix="uringapi-log-config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield path
    finally:
        os.unlink(path)
