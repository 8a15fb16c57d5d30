"""pytest plugin (`-p daphne_swap`) that runs daphne's own integration tests against
`uringapi serve` instead of daphne: run.sh calls pytest on tests/test_http_request.py and
tests/test_http_response.py, and on tests/test_websocket.py, of the daphne sdist with this
plugin loaded. CONFORMANCE_SERVER=uvicorn points them at uvicorn instead (support.py).

daphne's tests start a server through daphne.testing.DaphneTestingInstance, send real
HTTP, and read back (through files) what its recording TestApplication received. This
plugin replaces DaphneTestingInstance, before the tests import it, with one that points
them at a uringapi server serving daphne_app.py. The servers start once per configuration (daphne's
default; proxy headers for the tests that ask for X-Forwarded-For handling; a
`--ws-max-size` for the tests of daphne's websocket_max_message_size) and stop when the
session ends. daphne's __exit__ ends its server and with it every connection; here the
sockets the websocket tests opened are closed instead, so that their apps end before the
next test writes its setup file.

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
    "test_websocket.py::TestWebsocket::test_xff":
        "expects the client port from X-Forwarded-Port, a daphne option (as "
        "test_x_forwarded_for_parsed of the HTTP tests)",
    "test_websocket.py::TestWebsocket::test_root_path":
        "tests daphne's own Daphne-Root-Path request header (as test_root_path_header of "
        "the HTTP tests)",
    "test_websocket.py::TestWebsocket::test_websocket_max_frame_size":
        "tests daphne's websocket_max_frame_size, a limit on one frame; uringapi, like "
        "uvicorn, limits whole messages (--ws-max-size, which "
        "test_websocket_max_message_size checks)",
    "test_websocket.py::TestWebsocket::test_application_checker_handles_asyncio_cancellederror":
        "starts a real daphne (a Twisted reactor in a subprocess) to check daphne's own "
        "table of connections; no uringapi server is involved",
}

#: test id -> an open uringapi bug the test finds. Strict xfail: it turns red once fixed.
KNOWN_BUGS: dict[str, str] = {}  # none open

#: Hang guard for the previous test's app to finish (not a speed assertion).
APPS_IDLE_TIMEOUT = 10.0

_servers: dict[tuple[bool, int | None], support.Server] = {}


def server(xff: bool, ws_max_size: int | None = None) -> support.Server:
    key = (xff, ws_max_size)
    if key not in _servers:
        extra = ["--lifespan", "off", "--no-date-header", "--no-server-header"]
        # Proxy headers: off like daphne's default, or believed from the local test client.
        extra += ["--forwarded-allow-ips", "127.0.0.1"] if xff else ["--no-proxy-headers"]
        if ws_max_size is not None:
            extra += ["--ws-max-size", str(ws_max_size)]
        # The worker imports daphne.testing from the sdist: PYTHONPATH passes on to it.
        _servers[key] = support.start(WORK / f"server-xff-{xff}-ws-{ws_max_size}",
                                      "daphne_app:app", app_dir=support.HERE,
                                      extra=tuple(extra), probe_path=None,
                                      kind=support.CHECKED_SERVER)
    return _servers[key]


#: Sockets that the test client opened in the current test (see the module doc).
_open_sockets: list = []


#: App instances already reported as never ending (so one leak fails one test, not each
#: test after it).
_leaked = 0


def wait_apps_idle() -> int:
    """Waits until every app instance that started has ended: the previous test's app
    must not pick up the next test's setup file. Returns how many are still running at
    the hang guard (not counting those already reported)."""
    deadline = time.monotonic() + APPS_IDLE_TIMEOUT
    while True:
        try:
            words = Path(APPS_LOG).read_text().split()
        except FileNotFoundError:
            return 0
        running = words.count("start") - words.count("end") - _leaked
        if running <= 0 or time.monotonic() >= deadline:
            return max(running, 0)
        time.sleep(0.01)


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
        self.port = server(self.xff, self.websocket_max_message_size).port
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        global _leaked
        while _open_sockets:
            _open_sockets.pop().close()
        running = wait_apps_idle()
        if running:
            # The client is gone, so the server owes each app its disconnect event: an app
            # still waiting is a leaked task (as the one a denied handshake once left).
            _leaked += running
            if exc_type is None:
                raise AssertionError(
                    f"{running} app instance(s) still running {APPS_IDLE_TIMEOUT:g} s after "
                    "the test's sockets closed: the server never told them the client left")


daphne.testing.DaphneTestingInstance = UringapiTestingInstance

# The test modules import http_strategies from their own folder; so does this plugin, first.
sys.path.insert(0, str(Path(daphne.testing.__file__).resolve().parents[1] / "tests"))
import http_strategies  # noqa: E402

_connect = http.client.HTTPConnection.connect


def connect_remembered(self):
    """HTTPConnection.connect; the socket is remembered, to be closed when the test's
    server instance exits, as daphne's exit closes it with the server. (daphne's
    websocket_handshake hands its socket to the test, or drops it on a failed handshake,
    where hypothesis may keep it alive with the traceback.)"""
    _connect(self)
    _open_sockets.append(self.sock)


http.client.HTTPConnection.connect = connect_remembered

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

_putheader = http.client.HTTPConnection.putheader


def putheader_own_host_wins(self, header, *values):
    """A test that sends a Host of its own (daphne's websocket handshake sends
    `Host: example.com`) replaces the one putrequest_with_host added: a request with two
    Host headers must get 400 (RFC 9112 §3.2)."""
    name = header.decode("latin-1") if isinstance(header, bytes) else header
    added = b"Host: " + ADDED_HOST
    if name.lower() == "host" and added in self._buffer:
        self._buffer.remove(added)
    _putheader(self, header, *values)


http.client.HTTPConnection.putheader = putheader_own_host_wins


def pytest_report_header(config: pytest.Config) -> str:
    where = support.URINGAPI if support.CHECKED_SERVER == "uringapi" else "uvicorn"
    return f"daphne tests against {where} (daphne {daphne.__version__} sdist)"


#: daphne's header-injection tests send each of these bytes inside a header value and expect
#: 400. 0x85 (NEL) is left out: it is obs-text, which RFC 9110 §5.5 allows in a field value
#: (as opaque data); daphne refuses it because autobahn's handshake parser decodes to str and
#: splits lines with str.splitlines(), which treats NEL as a line break. uringapi parses
#: bytes and never splits on it. The five control bytes are still sent.
OBS_TEXT_ALLOWED = b"\x85"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen, files = set(), set()
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and cls.__name__ == "TestHeaderValueInjection":
            cls.INVALID_BYTES = tuple(b for b in cls.INVALID_BYTES if b != OBS_TEXT_ALLOWED)
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
