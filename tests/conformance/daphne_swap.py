"""pytest plugin (`-p daphne_swap`) that runs daphne's own HTTP integration tests against
`uringapi serve` instead of daphne: run.sh calls pytest on tests/test_http_request.py and
tests/test_http_response.py of the daphne sdist with this plugin loaded.

daphne's tests start a server through daphne.testing.DaphneTestingInstance, send real
HTTP, and read back (through files) what its recording TestApplication received. This
plugin replaces DaphneTestingInstance, before the tests import it, with one that points
them at a uringapi server serving daphne_app.py. The servers start once (one as daphne's
default, one with proxy headers for the tests that ask for X-Forwarded-For handling) and
stop when the session ends.

Tests that check a daphne feature or a daphne-specific choice rather than ASGI or HTTP are
listed in NOT_APPLICABLE with the reason, and reported as skipped with that reason (run
with -rs); a name there that no longer exists fails the run, so the list stays true.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

WORK = Path(os.environ["DAPHNE_CONFORMANCE_DIR"]).resolve()
# daphne.testing places its setup and result files in tempfile.gettempdir() when it is
# imported; the test process and the app in uringapi's worker must agree on it.
(WORK / "tmp").mkdir(parents=True, exist_ok=True)
os.environ["TMPDIR"] = str(WORK / "tmp")
tempfile.tempdir = None

import http.client  # noqa: E402
import sys  # noqa: E402

import daphne.testing  # noqa: E402  (the sdist's, on PYTHONPATH)
from daphne.testing import BaseDaphneTestingInstance, TestApplication  # noqa: E402

import support  # noqa: E402
from daphne_app import ADDED_HOST, APPS_LOG, FileLock  # noqa: E402

#: test id -> why the test cannot apply to uringapi.
NOT_APPLICABLE = {
    "test_http_request.py::TestHTTPRequest::test_request_body_chunking":
        "tests daphne's --request-buffer-size option (how daphne cuts a body into "
        "http.request messages); uringapi has no such option, and how a body is cut into "
        "messages is the server's choice under ASGI",
    "test_http_request.py::TestHTTPRequest::test_root_path_header":
        "tests daphne's own Daphne-Root-Path request header; uringapi takes the root path "
        "from --root-path, as uvicorn does (tests/e2e/test_asgi_differential.py covers it)",
    "test_http_request.py::TestHTTPRequest::test_x_forwarded_for_parsed":
        "expects the client port from X-Forwarded-Port, a daphne option; uringapi follows "
        "uvicorn's proxy-header rules (X-Forwarded-For and -Proto; the port is 0), which "
        "test_x_forwarded_for_no_port checks",
    "test_http_response.py::TestHTTPResponse::test_headers":
        "compares the response's header list after removing Transfer-Encoding (how daphne "
        "frames a body) but not Content-Length, which uringapi sends for a body it has "
        "whole (RFC 9112 §6.3); the app's own headers are covered by the other tests",
    "test_http_response.py::TestHTTPResponse::test_headers_type":
        "expects daphne's ValueError message word for word; which exception a server "
        "raises for a header that is not bytes is its own choice (uringapi: TypeError; "
        "tests/e2e/test_asgi_differential.py checks what the client gets)",
    "test_http_response.py::TestHTTPResponse::test_headers_type_raw":
        "expects the status line of a response to an HTTP/1.0 request to say HTTP/1.0; "
        "uringapi says HTTP/1.1, as uvicorn does and RFC 9110 §6.2 asks (the highest "
        "minor version the server conforms to); the 500 for a str header name is checked "
        "against uvicorn in tests/e2e/test_asgi_differential.py",
    "test_http_response.py::TestHTTPResponse::test_status_code_required":
        "expects daphne's ValueError for an http.response.start without status; ASGI "
        "leaves the exception to the server (uringapi and uvicorn raise KeyError)",
}

#: test id -> an open uringapi bug the test finds. Strict xfail: it turns red once fixed.
KNOWN_BUGS: dict[str, str] = {}  # none open

#: Hang guard for the previous test's app to finish (not a speed assertion).
APPS_IDLE_TIMEOUT = 10.0

_servers: dict[bool, support.Server] = {}


def server(xff: bool) -> support.Server:
    if xff not in _servers:
        extra = ["--lifespan", "off", "--no-date-header", "--no-server-header"]
        # Proxy headers: off like daphne's default, or believed from the local test client.
        extra += ["--forwarded-allow-ips", "127.0.0.1"] if xff else ["--no-proxy-headers"]
        # The worker imports daphne.testing from the sdist: PYTHONPATH passes on to it.
        _servers[xff] = support.start(WORK / f"server-xff-{xff}", "daphne_app:app",
                                      app_dir=support.HERE, extra=tuple(extra), probe_path=None)
    return _servers[xff]


def wait_apps_idle() -> None:
    """Waits until every app instance that started has ended: the previous test's app
    must not pick up the next test's setup file."""
    deadline = time.monotonic() + APPS_IDLE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            words = Path(APPS_LOG).read_text().split()
        except FileNotFoundError:
            return
        if words.count("start") == words.count("end"):
            return
        time.sleep(0.01)
    print(f"warning: an app instance is still running after {APPS_IDLE_TIMEOUT}s")


class UringapiTestingInstance(daphne.testing.DaphneTestingInstance):
    """DaphneTestingInstance with uringapi as the server (see the module doc)."""

    def __init__(self, xff=False, http_timeout=None, request_buffer_size=None, **kwargs):
        self.lock = FileLock()
        BaseDaphneTestingInstance.__init__(self, xff=xff, http_timeout=http_timeout,
                                           request_buffer_size=request_buffer_size,
                                           application=None, **kwargs)

    def __enter__(self):
        wait_apps_idle()
        TestApplication.delete_setup()
        TestApplication.delete_result()
        self.port = server(self.xff).port
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        wait_apps_idle()


daphne.testing.DaphneTestingInstance = UringapiTestingInstance

# The test modules import http_strategies from their own folder; so does this plugin, first.
sys.path.insert(0, str(Path(daphne.testing.__file__).resolve().parents[1] / "tests"))
import http_strategies  # noqa: E402

# test_kitchen_sink draws its method from this list and sends every method with an
# origin-form target ("/path"). CONNECT takes only the authority-form ("host:port",
# RFC 9112 §3.2.3), so uringapi answers it with 400 before any app runs, rightly; daphne
# passes it on. The method is left out of the draw.
http_strategies.HTTP_METHODS.remove("CONNECT")

_putrequest = http.client.HTTPConnection.putrequest


def putrequest_with_host(self, method, url, skip_host=False, skip_accept_encoding=False):
    """daphne's tests build HTTP/1.1 requests with skip_host=True, and a server must answer
    those with 400 (RFC 9112 §3.2). This sends a Host header that daphne_app.py removes from
    the recorded scope again, so the tests see exactly the headers they sent."""
    _putrequest(self, method, url, skip_host=True, skip_accept_encoding=skip_accept_encoding)
    if skip_host:
        self.putheader("Host", ADDED_HOST)
    else:
        self.putheader("Host", f"{self.host}:{self.port}")


http.client.HTTPConnection.putrequest = putrequest_with_host


def pytest_report_header(config: pytest.Config) -> str:
    return f"daphne tests against {support.URINGAPI} (daphne {daphne.__version__} sdist)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen, files = set(), set()
    for item in items:
        files.add(item.nodeid.split("/")[-1].split("::")[0])
        test_id = item.nodeid.split("/")[-1]
        if test_id in NOT_APPLICABLE:
            seen.add(test_id)
            item.add_marker(pytest.mark.skip(reason=f"not applicable: {NOT_APPLICABLE[test_id]}"))
        if test_id in KNOWN_BUGS:
            seen.add(test_id)
            item.add_marker(pytest.mark.xfail(strict=True,
                                              reason=f"known uringapi bug: {KNOWN_BUGS[test_id]}"))
    stale = {t for t in {**NOT_APPLICABLE, **KNOWN_BUGS} if t.split("::")[0] in files} - seen
    if stale:
        raise pytest.UsageError(f"NOT_APPLICABLE/KNOWN_BUGS name tests that do not exist: "
                                f"{sorted(stale)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for s in _servers.values():
        s.stop()
