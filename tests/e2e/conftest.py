"""End-to-end fixtures: the real server as a subprocess on 127.0.0.1 (see harness.py).

URINGAPI_TEST_SERVER=uringapi (default) runs the `uringapi` binary (URINGAPI_BIN, else
<repo>/.venv/bin/uringapi); URINGAPI_TEST_SERVER=uvicorn runs uvicorn instead, to check
the tests themselves, and skips tests marked `uringapi_only`.

A server is started on a free port, waited for with a bounded connect retry (and one
HTTP probe, so multi-process servers have at least one worker answering), and stopped
with SIGTERM, then SIGKILL of its whole process group if it does not exit. Its stderr
goes to a file: tests read it through `Server.stderr()`, and a failing test's report
shows its tail.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

# The helper modules sit beside this file; make them importable under any
# --import-mode (the default "prepend" does this already).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import SERVER_KIND, URINGAPI_BIN, Server, ServerFactory  # noqa: E402

TEST_TIMEOUT = 120  # per test, via pytest-timeout when installed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "uringapi_only: behaviour specified for uringapi only; skipped under uvicorn"
    )
    if SERVER_KIND not in ("uringapi", "uvicorn"):
        raise pytest.UsageError(
            f"URINGAPI_TEST_SERVER={SERVER_KIND!r}: expected 'uringapi' or 'uvicorn'"
        )
    if SERVER_KIND == "uringapi" and not os.access(URINGAPI_BIN, os.X_OK):
        raise pytest.UsageError(
            f"no uringapi binary at {URINGAPI_BIN}: build it (pip install . into .venv), "
            "point URINGAPI_BIN at it, or run with URINGAPI_TEST_SERVER=uvicorn"
        )


def pytest_report_header(config: pytest.Config) -> str:
    where = URINGAPI_BIN if SERVER_KIND == "uringapi" else f"{sys.executable} -m uvicorn"
    return f"e2e server: {SERVER_KIND} ({where})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_timeout = config.pluginmanager.hasplugin("timeout")
    skip = pytest.mark.skip(reason="uringapi-only behaviour; server under test is uvicorn")
    for item in items:
        if SERVER_KIND == "uvicorn" and item.get_closest_marker("uringapi_only"):
            item.add_marker(skip)
        if has_timeout and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Server):
            report.sections.append((f"{name}: {value.describe()} stderr (tail)", value.stderr_tail()))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.stop_all()


# Long-lived servers shared by every module that needs the same configuration.
# (workers, threads) is in the name: `fastapi_server` parametrises over some of them.

@pytest.fixture(scope="session")
def fastapi_w1t1(servers: ServerFactory) -> Server:
    return servers.start("fastapi_app:app", workers=1, threads=1)


@pytest.fixture(scope="session")
def fastapi_w1t2(servers: ServerFactory) -> Server:
    return servers.start("fastapi_app:app", workers=1, threads=2)


@pytest.fixture(scope="session")
def fastapi_w2t2(servers: ServerFactory) -> Server:
    return servers.start("fastapi_app:app", workers=2, threads=2)


@pytest.fixture(params=["w1t1", "w2t2"])
def fastapi_server(request: pytest.FixtureRequest) -> Server:
    """The FastAPI test app, once per (workers, threads) configuration."""
    return request.getfixturevalue(f"fastapi_{request.param}")


@pytest.fixture(scope="session")
def starlette_server(servers: ServerFactory) -> Server:
    return servers.start("starlette_app:app", workers=1, threads=2)
