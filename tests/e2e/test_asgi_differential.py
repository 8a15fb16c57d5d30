"""uringapi against uvicorn, probe by probe: the same raw requests go to both servers serving
tests/apps/probe_app.py, and what the app saw (scope, receive() messages, send() outcomes)
and what the client saw (the bytes on the wire) must be the same.

uvicorn is the reference because it is what most ASGI users run: `python -m uvicorn --loop
uvloop --http httptools`, the same command tests/e2e/harness.py uses with
URINGAPI_TEST_SERVER=uvicorn. Both servers run here in every mode, one process each.

Normalisations, each with its reason (applied to both servers alike):
  N1  The Date and Server response headers are dropped: one is the clock, the other the
      product name.
  N2  Response header names are compared lowercased: field names are case-insensitive
      (RFC 9110 §5.1).
  N3  client/server addresses are compared by shape (container, length, item types, host),
      not port: the ports differ from run to run. The container (tuple or list) is kept:
      both servers give tuples today.
  N4  Request bodies that the client sends in several writes (or that exceed one read)
      may reach the app in a different number of http.request messages: how a body is
      cut into messages is the server's choice (ASGI HTTP spec: "more_body"). For those
      cases consecutive http.request messages are merged into one summary: count >= 1,
      every message but the last has more_body=True, the last has more_body=False, and
      the byte total and sha256 are equal. Cases sent in one small write compare the
      exact message list.
  N5  Event-log lines lose the worker pid.

Where the two differ and uringapi is the one that is right (or both are allowed), the case
names an expected difference (EXPECTED below) with its reason and the exact uringapi value,
so the difference is pinned rather than ignored. Independently of uvicorn, every
send()-semantics probe also asserts the rule the ASGI spec and the issue ask for: an
exception before anything was sent is a 500; once bytes were sent, the connection is
closed and the client can tell the body is incomplete.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import APPS_DIR, HOST, URINGAPI_BIN, Server, free_port, server_env

pytestmark = pytest.mark.skipif(not URINGAPI_BIN.exists(),
                                reason=f"no uringapi binary at {URINGAPI_BIN} to compare")

APP = "probe_app:app"
#: Hang guards, not speed assertions: generous for a loaded 2-core machine.
READ_TIMEOUT = 20.0
EVENT_TIMEOUT = 20.0


# ---- the two servers -------------------------------------------------------------------------

def command(kind: str, port: int, extra: tuple[str, ...]) -> list[str]:
    common = [APP, "--host", HOST, "--port", str(port), "--app-dir", str(APPS_DIR),
              "--log-level", "info", *extra]
    if kind == "uringapi":
        return [str(URINGAPI_BIN), "serve", *common, "--workers", "1", "--threads", "1"]
    return [sys.executable, "-m", "uvicorn", *common, "--loop", "uvloop", "--http", "httptools"]


@dataclass
class Probed:
    """One server serving the probe app, with its own event log."""

    kind: str
    server: Server
    events_path: Path

    def events(self) -> list[str]:
        """Event-log lines without the pid (N5)."""
        if not self.events_path.exists():
            return []
        lines = []
        for line in self.events_path.read_text().splitlines():
            event, _pid, *rest = line.split(" ")
            lines.append(" ".join([event, *rest]))
        return lines

    def wait_event(self, prefix: str, timeout: float = EVENT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.events():
                if line.startswith(prefix):
                    return line
            time.sleep(0.02)
        pytest.fail(f"{self.kind}: no event {prefix!r} within {timeout}s; events: {self.events()}\n"
                    f"{self.server.stderr_tail()}")

    def reset_events(self) -> None:
        self.events_path.unlink(missing_ok=True)


def start_pair(root: Path, name: str, extra: tuple[str, ...] = ()) -> dict[str, Probed]:
    pair = {}
    for kind in ("uvicorn", "uringapi"):
        port = free_port()
        events_path = root / f"{name}-{kind}.events"
        env = server_env({"URINGAPI_TEST_EVENT_LOG": str(events_path)})
        server = Server(command(kind, port, extra), port, 1, 1, root / f"{name}-{kind}", env)
        server.kind = kind
        server.wait_ready("/fixed")
        pair[kind] = Probed(kind, server, events_path)
    return pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Probed]]:
    started = start_pair(tmp_path_factory.mktemp("differential"), "plain")
    yield started
    for p in started.values():
        p.server.stop()


@pytest.fixture(scope="module")
def rooted_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Probed]]:
    started = start_pair(tmp_path_factory.mktemp("differential-root"), "rooted",
                         ("--root-path", "/mnt"))
    yield started
    for p in started.values():
        p.server.stop()


# ---- reading the wire ------------------------------------------------------------------------

@dataclass
class Transcript:
    """What a client saw for one request, normalised by N1 and N2."""

    interim: list[str] = field(default_factory=list)  # 1xx status lines
    status_line: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_wire: bytes = b""  # the body as framed on the wire (chunk sizes included)
    complete: bool = False  # the framing said the response ended
    after: str = ""  # "closed", or "kept-alive" (a follow-up request was answered)

    def as_dict(self) -> dict[str, Any]:
        return {"interim": self.interim, "status_line": self.status_line,
                "headers": self.headers, "body_wire": self.body_wire,
                "complete": self.complete, "after": self.after}

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None


class Wire:
    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def take_line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self.fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, method: str) -> Transcript:
        t = Transcript()
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self.fill():
                    t.body_wire = self.buf
                    self.buf = b""
                    return t  # closed before a complete head
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            if 100 <= status < 200:
                t.interim.append(lines[0])
                continue
            t.status_line = lines[0]
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() not in ("date", "server"):  # N1
                    t.headers.append((name.lower(), value.strip()))  # N2
            break
        te = (t.header("transfer-encoding") or "").lower()
        if method == "HEAD" or status in (204, 304):
            t.complete = True
        elif te.endswith("chunked"):
            wire = []
            while True:
                line = self.take_line()
                if line is None:
                    break
                wire.append(line + b"\r\n")
                size = int(line.split(b";")[0], 16)
                data = self.take(size + 2)
                if data is None:
                    wire.append(self.buf)
                    self.buf = b""
                    break
                wire.append(data)
                if size == 0:
                    t.complete = data == b"\r\n"
                    break
            t.body_wire = b"".join(wire)
        elif t.header("content-length") is not None:
            n = int(t.header("content-length"))
            data = self.take(n)
            t.complete = data is not None
            t.body_wire = data if data is not None else self.buf
        else:  # delimited by close (RFC 9112 §6.3 rule 8)
            while self.fill():
                pass
            t.body_wire, self.buf = self.buf, b""
            t.complete = True
        return t


def exchange(port: int, request: bytes, method: str = "GET") -> Transcript:
    """Sends `request`, reads the response, then finds out whether the connection is still
    usable: a follow-up GET /fixed that is answered means kept-alive."""
    w = Wire(port)
    try:
        w.sock.sendall(request)
        t = w.read_response(method)
        if w.eof or not t.complete:
            while w.fill():  # an incomplete response: the server must close
                pass
            t.after = "closed"
            assert not w.buf or not t.complete, f"bytes after the response: {w.buf[:200]!r}"
            return t
        try:
            w.sock.sendall(b"GET /fixed?n=2 HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            follow = w.read_response("GET")
        except (BrokenPipeError, ConnectionResetError):
            follow = Transcript()
        if follow.status_line:
            assert follow.status_line.startswith("HTTP/1.1 200"), follow
            t.after = "kept-alive"
        else:
            t.after = "closed"
        return t
    finally:
        w.close()


def req(method: str, target: str, headers: list[tuple[str, str]] | None = None,
        body: bytes = b"", version: str = "HTTP/1.1", close: bool = True) -> bytes:
    lines = [f"{method} {target} {version}"]
    hs = list(headers if headers is not None else [("Host", "probe")])
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    if close and version == "HTTP/1.1":
        hs.append(("Connection", "close"))
    lines += [f"{k}: {v}" for k, v in hs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---- 1. scope and receive(): what the app sees -----------------------------------------------

@dataclass
class ScopeCase:
    id: str
    request: bytes
    method: str = "GET"
    merge_bodies: bool = False  # N4


BIG = bytes(range(256)) * 1024  # 256 KiB

SCOPE_CASES = [
    ScopeCase("get", req("GET", "/record")),
    ScopeCase("percent-encoded-path-and-query",
              req("GET", "/record/caf%C3%A9/a%2Fb?x=1&y=%20z&e=caf%C3%A9&flag")),
    ScopeCase("empty-query", req("GET", "/record?")),
    ScopeCase("http-1.0-without-host", req("GET", "/record", headers=[], version="HTTP/1.0")),
    ScopeCase("headers-order-case-duplicates",
              req("GET", "/record", [("Host", "probe"), ("X-First", "1"), ("Accept", "a/b"),
                                     ("x-dup", "one"), ("X-DUP", "two"),
                                     ("X-Latin1", "caf\u00e9"), ("X-Empty", "")])),
    ScopeCase("post-content-length", req("POST", "/record", body=b"hello=world"), "POST"),
    ScopeCase("post-empty-content-length",
              req("POST", "/record", [("Host", "probe"), ("Content-Length", "0")]), "POST"),
    ScopeCase("post-chunked",
              req("POST", "/record", [("Host", "probe"), ("Transfer-Encoding", "chunked")],
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "POST"),
    ScopeCase("post-256k", req("POST", "/record", body=BIG), "POST", merge_bodies=True),
    ScopeCase("put-chunked-256k",
              req("PUT", "/record", [("Host", "probe"), ("Transfer-Encoding", "chunked")],
                  b"".join(b"%x\r\n%s\r\n" % (len(BIG[i:i + 10000]), BIG[i:i + 10000])
                           for i in range(0, len(BIG), 10000)) + b"0\r\n\r\n"),
              "PUT", merge_bodies=True),
    ScopeCase("head", req("HEAD", "/record"), "HEAD"),
    ScopeCase("delete-with-body", req("DELETE", "/record/1", body=b"{}"), "DELETE"),
    ScopeCase("expect-100-continue",
              req("POST", "/record", [("Host", "probe"), ("Expect", "100-continue"),
                                      ("Content-Length", "4")], b"ping"), "POST"),
]


def merged(messages: list[dict]) -> list[dict]:
    """N4: consecutive http.request messages as one summary (their number is left out)."""
    out: list[dict] = []
    for m in messages:
        if m["type"] == "http.request" and out and out[-1]["type"] == "http.request*":
            s = out[-1]
            s["early_more_body"] = s["early_more_body"] and s["last_more_body"] is True
            s["last_more_body"] = m["more_body"]
            s["total"] += m["body_len"]
            s["keys"] |= set(m["keys"])
        elif m["type"] == "http.request":
            out.append({"type": "http.request*", "early_more_body": True,
                        "last_more_body": m["more_body"], "total": m["body_len"],
                        "keys": set(m["keys"])})
        else:
            out.append(m)
    for s in out:
        if "keys" in s and isinstance(s["keys"], set):
            s["keys"] = sorted(s["keys"])
    return out


def app_view(port: int, case: ScopeCase) -> tuple[dict, Transcript]:
    t = exchange(port, case.request, case.method)
    if case.method == "HEAD":
        return {}, t
    assert t.status_line.startswith("HTTP/1.1 200") or t.status_line.startswith("HTTP/1.0 200"), t
    view = json.loads(t.body_wire)
    if case.merge_bodies:
        view["messages"] = merged(view["messages"])
    return view, t


@pytest.mark.parametrize("case", SCOPE_CASES, ids=[c.id for c in SCOPE_CASES])
def test_app_sees_the_same_scope_and_messages(pair: dict[str, Probed], case: ScopeCase) -> None:
    views = {k: app_view(p.server.port, case) for k, p in pair.items()}
    (uv, uv_wire), (ua, ua_wire) = views["uvicorn"], views["uringapi"]
    expected = {**EXPECTED_SCOPE_ALL, **EXPECTED_SCOPE.get(case.id, {})}
    for key in sorted(set(uv) | set(ua)):
        if key == "scope":
            for skey in sorted(set(uv["scope"]) | set(ua["scope"])):
                want = expected.get(skey, (None, uv["scope"].get(skey)))[1]
                if skey == "keys":  # follows from the expected differences above
                    want = sorted(set(uv["scope"]["keys"]) | {"extensions"})
                assert ua["scope"].get(skey) == want, (
                    f"scope[{skey!r}]: uringapi {ua['scope'].get(skey)!r}, uvicorn "
                    f"{uv['scope'].get(skey)!r}")
        else:
            assert ua.get(key) == uv.get(key), (
                f"{key}: uringapi {ua.get(key)!r}, uvicorn {uv.get(key)!r}")
    # The response is framed the same on the wire too (minus N1, N2). Its body is the JSON
    # compared field by field above, whose length follows the expected differences, so the
    # body and its Content-Length are left to that comparison.
    uv_seen, ua_seen = uv_wire.as_dict(), ua_wire.as_dict()
    for seen in (uv_seen, ua_seen):
        seen["headers"] = [(k, v) for k, v in seen["headers"] if k != "content-length"]
        seen["body_wire"] = b"<json>"
    if case.id in EXPECTED_SCOPE_WIRE:
        uv_seen.update(EXPECTED_SCOPE_WIRE[case.id][1])
    assert ua_seen == uv_seen


def test_root_path_is_applied_alike(rooted_pair: dict[str, Probed]) -> None:
    """--root-path /mnt: both servers set root_path and prefix path and raw_path with it
    (the request comes from a proxy that stripped the prefix)."""
    case = ScopeCase("root-path", req("GET", "/record/x?q=1"))
    scopes = {k: app_view(p.server.port, case)[0]["scope"] for k, p in rooted_pair.items()}
    for key, (_reason, value) in EXPECTED_SCOPE_ALL.items():
        if value is not None:
            assert scopes["uringapi"].pop(key) == value
            scopes["uvicorn"].pop(key, None)
        else:
            scopes["uringapi"]["keys"].remove("extensions")
    assert scopes["uringapi"] == scopes["uvicorn"]
    assert scopes["uringapi"]["root_path"] == "/mnt"
    assert scopes["uringapi"]["path"] == "/mnt/record/x"
    assert scopes["uringapi"]["raw_path"] == "/mnt/record/x"


#: Scope fields where uringapi differs from uvicorn on purpose, in every case: field ->
#: (reason, uringapi's value).
EXPECTED_SCOPE_ALL: dict[str, tuple[str, Any]] = {
    "asgi": ("uringapi announces HTTP spec 2.4: its send() raises an OSError subclass once the "
             "client is gone (the rule asgiref added with 2.4, django/asgiref#431). uvicorn "
             "0.54's httptools protocol returns silently there (see DISCONNECT_MID_REQUEST) "
             "and announces 2.3.", {"version": "3.0", "spec_version": "2.4"}),
    "extensions": ("uringapi offers the ASGI extension http.response.pathsend (the front end "
                   "sends the named file itself); uvicorn's httptools protocol offers none and "
                   "leaves the optional key out. The probe records each extension's keys.",
                   {"http.response.pathsend": []}),
    "keys": ("follows from `extensions` above", None),
}
#: The same, per case id.
EXPECTED_SCOPE: dict[str, dict[str, tuple[str, Any]]] = {}
#: Wire fields (Transcript) where uringapi differs on purpose, per case id.
EXPECTED_SCOPE_WIRE: dict[str, tuple[str, dict[str, Any]]] = {
    "expect-100-continue": (
        "the body arrived in the same packet as the head, so uringapi omits the interim "
        "100 (Continue), as RFC 9110 §10.1.1 allows (\"MAY omit sending a 100 (Continue) "
        "response if it has already received some or all of the content\"). uvicorn sends "
        "it anyway when the app first calls receive(). test_expect_100_continue_head_first "
        "covers a client that really waits.", {"interim": []}),
}


def messages_after_split_write(pair: dict[str, Probed], headers: list[tuple[str, str]],
                               between: Callable[[str, Wire], None]) -> dict[str, list]:
    """POSTs a 4-byte body in two writes, head first, with `between(kind, wire)` in
    between; returns the messages the app saw on each server, after checking that both
    answered 200 with the same ones."""
    head = req("POST", "/record", [("Host", "probe"), *headers, ("Content-Length", "4")])
    views = {}
    for kind, p in pair.items():
        w = Wire(p.server.port)
        try:
            w.sock.sendall(head)
            between(kind, w)
            w.sock.sendall(b"ping")
            t = w.read_response("POST")
        finally:
            w.close()
        assert t.status_line == "HTTP/1.1 200 OK", (kind, t)
        views[kind] = json.loads(t.body_wire)["messages"]
    assert views["uringapi"] == views["uvicorn"]
    return views


def test_expect_100_continue_head_first(pair: dict[str, Probed]) -> None:
    """A client that sends Expect: 100-continue and waits: both servers invite the body
    (once the app asks for it), and the app then sees the same messages: no empty first
    message before the body arrives."""
    def continue_awaited(kind: str, w: Wire) -> None:
        interim = w.take_line()
        assert interim == b"HTTP/1.1 100 Continue", (kind, interim)
        assert w.take_line() == b"", kind

    views = messages_after_split_write(pair, [("Expect", "100-continue")], continue_awaited)
    assert [(m["body_len"], m["more_body"]) for m in views["uringapi"]] == [(4, False)]


def test_body_sent_after_the_head_gives_the_same_messages(pair: dict[str, Probed]) -> None:
    """A client that writes the head, pauses, then writes the body: the app's first
    receive() waits for the body on both servers, rather than getting an empty
    http.request with more_body=True (which ASGI allows, but uvicorn does not do)."""
    def pause(kind: str, w: Wire) -> None:
        time.sleep(0.1)  # the head reaches the app before the body (not a speed check)

    views = messages_after_split_write(pair, [], pause)
    assert [(m["body_len"], m["more_body"]) for m in views["uringapi"]] == [(4, False)]


@pytest.mark.parametrize("target", [b"/record/\xc3\xa4\xc3\xb6", b"/record?q=\xc3\xa4"],
                         ids=["path", "query"])
def test_request_target_with_raw_non_ascii_bytes_is_rejected_alike(
        pair: dict[str, Probed], target: bytes) -> None:
    """Octets above 0x7F cannot appear in a request-target (RFC 9112 §3.2, RFC 3986 §2:
    they must be percent-encoded); uvicorn (and daphne) answer 400 and close. The app must
    not be called with them."""
    request = b"GET " + target + b" HTTP/1.1\r\nHost: probe\r\n\r\n"
    seen = {k: exchange(p.server.port, request) for k, p in pair.items()}
    assert seen["uvicorn"].status_line == "HTTP/1.1 400 Bad Request", seen["uvicorn"]
    assert seen["uringapi"].status_line.split(" ")[1] == "400", seen["uringapi"]
    assert seen["uringapi"].after == "closed"


# ---- 2. send(): what the client sees when the app misbehaves ---------------------------------

@dataclass
class SendCase:
    id: str
    target: str
    method: str = "GET"
    #: What uringapi must do whatever uvicorn does: "complete" (a whole response), "500",
    #: or "cut" (some bytes went out; the connection is closed and the body is incomplete).
    rule: str = "complete"
    keep_alive: bool = True  # the request does not ask for Connection: close
    #: The event the probe records about its send()/receive(), compared between servers.
    event: str | None = None
    version: str = "HTTP/1.1"


SEND_CASES = [
    SendCase("fixed", "/fixed?n=10"),
    SendCase("stream-chunked", "/stream?chunks=3&size=5"),
    SendCase("stream-content-length", "/stream?chunks=3&size=5&cl=1"),
    SendCase("head-fixed", "/fixed?n=10", "HEAD"),
    SendCase("http-1.0-stream", "/stream?chunks=3&size=5", version="HTTP/1.0"),
    SendCase("raise-before-start", "/raise-before-start", rule="500"),
    SendCase("raise-after-start-unflushed", "/raise-after-start", rule="500"),
    SendCase("raise-after-start-flushed", "/raise-after-start?flush=1", rule="cut"),
    SendCase("raise-after-body", "/raise-after-body", rule="cut"),
    SendCase("return-before-start", "/return-before-start", rule="500"),
    SendCase("return-incomplete", "/return-incomplete", rule="cut"),
    SendCase("body-before-start", "/body-before-start", rule="500",
             event="sent body-before-start"),
    SendCase("start-twice-unflushed", "/start-twice", rule="500", event="sent start-twice"),
    SendCase("start-twice-flushed", "/start-twice?flush=1", rule="cut",
             event="sent start-twice"),
    SendCase("send-after-complete", "/send-after-complete", event="sent send-after-complete"),
    SendCase("str-header-name", "/str-header-name", rule="500", event="sent str-header-name"),
    SendCase("crlf-header-value", "/crlf-header-value", rule="500",
             event="sent crlf-header-value"),
    SendCase("bad-header-name", "/bad-header-name", rule="500", event="sent bad-header-name"),
    SendCase("informational-status", "/bad-status?status=103", rule="500",
             event="sent bad-status "),
    SendCase("status-600", "/bad-status?status=600", rule="500", event="sent bad-status "),
    SendCase("str-status", "/bad-status?status=str", rule="500", event="sent bad-status "),
    SendCase("int-body", "/bad-body?body=int", rule="500", event="sent bad-body "),
    SendCase("str-body", "/bad-body?body=str", rule="500", event="sent bad-body "),
    SendCase("disconnect-after-complete", "/disconnect-after-complete",
             event="received disconnect-after-complete"),
]


@dataclass(frozen=True)
class Difference:
    reason: str
    uringapi: dict[str, Any]  # Transcript fields -> uringapi's value
    event: str | None = None  # uringapi's event line, where it differs from uvicorn's


_500_BODY = b"Internal Server Error"
_KEEP_ALIVE_AFTER_500 = (
    "uvicorn closes the connection after every 500 it makes (it adds Connection: close); "
    "uringapi's 500 is complete and framed by Content-Length, so the connection stays "
    "usable, as RFC 9112 §9.3 allows. The status, headers the app could see and body agree.")
_UNFLUSHED = (
    "uvicorn writes the head to the socket as soon as http.response.start is sent, so an "
    "exception right after it can only end in a closed connection. uringapi holds the head "
    "until the body or the next loop turn (to send head and body in one write), so nothing "
    "has reached the client yet and it can still answer with a clean 500 (ASGI leaves this "
    "to the server; a 500 tells the client more than a reset).")
_500 = {"status_line": "HTTP/1.1 500 Internal Server Error",
        "headers": [("content-type", "text/plain; charset=utf-8"), ("content-length", "21")],
        "body_wire": _500_BODY, "complete": True, "after": "kept-alive"}

EXPECTED_SEND: dict[str, Difference] = {
    "raise-before-start": Difference(_KEEP_ALIVE_AFTER_500, {"headers": _500["headers"],
                                                             "after": "kept-alive"}),
    "return-before-start": Difference(_KEEP_ALIVE_AFTER_500, {"headers": _500["headers"],
                                                              "after": "kept-alive"}),
    "body-before-start": Difference(_KEEP_ALIVE_AFTER_500, {"headers": _500["headers"],
                                                            "after": "kept-alive"}),
    "raise-after-start-unflushed": Difference(_UNFLUSHED, _500),
    "start-twice-unflushed": Difference(_UNFLUSHED, _500),
    "http-1.0-stream": Difference(
        "an HTTP/1.0 client does not know chunked coding (RFC 9112 §7.1: a server MUST NOT "
        "send it to a 1.0 client); uvicorn's httptools protocol sends it anyway. uringapi "
        "sends the body as it comes and ends it by closing the connection (RFC 9112 §6.3).",
        {"headers": [("content-type", "text/plain"), ("connection", "close")],
         "body_wire": b"aaaaabbbbbccccc", "after": "closed"}),
    "str-header-name": Difference(
        "the app's http.response.start has a str header name (ASGI: byte strings), so send() "
        "raises and nothing has reached the client. uvicorn marks the response started "
        "before it checks the headers and then can only close the connection with no "
        "response at all; a 500 tells the client what happened.", _500),
    "crlf-header-value": Difference(
        "a header value with CR LF (a response-splitting attempt) or a header name that is "
        "not a token: both servers refuse it in send() with a RuntimeError, and as for a str "
        "header name uvicorn has marked the response started by then and closes the "
        "connection with no response; uringapi answers 500.", _500),
    "bad-header-name": Difference("as crlf-header-value", _500),
    "informational-status": Difference(
        "a 1xx status in http.response.start is no final response (RFC 9110 §15.2): a "
        "client takes it as interim and goes on waiting, then reads the next response as "
        "this one's. uvicorn sends it with the app's body behind it; uringapi's send() "
        "raises RuntimeError and the client gets a 500.",
        {**_500, "interim": []}, event="sent bad-status raised:RuntimeError:other"),
    "status-600": Difference(
        "RFC 9110 §15: valid status codes are 100..=599. uvicorn's send() raises KeyError "
        "after marking the response started, so the client gets a closed connection; "
        "uringapi's raises RuntimeError before, and the client gets a 500.",
        _500, event="sent bad-status raised:RuntimeError:other"),
    "str-status": Difference(
        "ASGI's status is an int; a str makes uvicorn's send() raise KeyError after the "
        "response counts as started (a closed connection), uringapi's TypeError before it "
        "(a 500).",
        _500, event="sent bad-status raised:TypeError:other"),
    "int-body": Difference(
        "ASGI's body is a byte string: both servers' send() raise TypeError for the int 5 (it "
        "used to be five NUL bytes under uringapi, bytes(5)). uvicorn has written the head by "
        "then and can only close the connection; uringapi still holds it and answers 500.",
        _500),
    "str-body": Difference("as int-body, for the str \"ok\"", _500),
    "send-after-complete": Difference(
        "the response was complete and well framed before the app's extra send() raised; "
        "uvicorn closes the connection anyway (its error path closes once a response has "
        "started), uringapi keeps it usable since nothing on the wire is wrong.",
        {"after": "kept-alive"}),
}


def check_rule(case: SendCase, t: Transcript) -> None:
    if case.rule == "complete":
        assert t.complete and t.status_line.split(" ")[1] == "200", t
    elif case.rule == "500":
        assert t.status_line == "HTTP/1.1 500 Internal Server Error", t
        assert t.complete and t.body_wire == _500_BODY, t
    else:  # cut: the head went out, the body never ends, and the server closed
        assert t.status_line.startswith("HTTP/1.1 200"), t
        assert not t.complete and t.after == "closed", t


#: uringapi bugs these probes found, open at the time of writing: each case fails (strict
#: xfail: it turns red once fixed, so the marker goes then) with the fix it needs.
KNOWN_BUGS: dict[str, str] = {}  # none open; a test id -> the bug and its fix


def known_bug(key: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"known uringapi bug: {KNOWN_BUGS[key]}")


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[known_bug(c.id)] if c.id in KNOWN_BUGS else [])
    for c in SEND_CASES])
def test_send_semantics_match(pair: dict[str, Probed], case: SendCase) -> None:
    for p in pair.values():
        p.reset_events()
    request = req(case.method, case.target, close=not case.keep_alive, version=case.version)
    seen = {k: exchange(p.server.port, request, case.method) for k, p in pair.items()}
    check_rule(case, seen["uringapi"])
    want = dict(seen["uvicorn"].as_dict())
    diff = EXPECTED_SEND.get(case.id)
    if diff is not None:
        assert any(want[key] != value for key, value in diff.uringapi.items()), (
            f"expected difference {case.id} no longer differs from uvicorn: drop it")
        want.update(diff.uringapi)
    assert seen["uringapi"].as_dict() == want, diff.reason if diff else "uringapi != uvicorn"

    # What send() did inside the app (when the probe records it) matches too.
    if case.event is not None:
        lines = {k: p.wait_event(case.event) for k, p in pair.items()}
        if diff is not None and diff.event is not None:
            assert lines["uvicorn"] != diff.event, f"{case.id}: send() now raises alike"
            lines["uvicorn"] = diff.event
        assert lines["uringapi"] == lines["uvicorn"]


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
@pytest.mark.parametrize("kind", [
    "uvicorn", "uringapi"])
def test_receive_waiting_when_the_response_completes_gets_disconnect(
        pair: dict[str, Probed], kind: str, close: bool) -> None:
    """A task of the app already waits in receive() when the response completes (Litestar's
    Stream, Starlette before ASGI 2.4): it must get http.disconnect then, as the spec says
    for a receive() after the response was sent, even though the client keeps the
    connection open (or the server closes it after a Connection: close request). Otherwise
    that task, and the request with it, never ends, and a graceful stop waits for it."""
    p = pair[kind]
    p.reset_events()
    w = Wire(p.server.port)
    try:
        w.sock.sendall(req("GET", "/stream-listen?chunks=3&size=5", close=close))
        t = w.read_response("GET")
        assert t.complete and t.status_line == "HTTP/1.1 200 OK", t
        # The client keeps its end open while the app finishes on its own.
        assert p.wait_event("listener stream-listen") == "listener stream-listen http.disconnect"
        p.wait_event("returned stream-listen")
    finally:
        w.close()


def test_send_after_complete_leaves_the_connection_usable(pair: dict[str, Probed]) -> None:
    """The expected difference above, from the client's side: a second request on the
    same connection is answered."""
    w = Wire(pair["uringapi"].server.port)
    try:
        w.sock.sendall(req("GET", "/send-after-complete", close=False))
        first = w.read_response("GET")
        w.sock.sendall(req("GET", "/fixed?n=3"))
        second = w.read_response("GET")
    finally:
        w.close()
    assert first.body_wire == b"done" and second.body_wire == b"xxx"


# ---- 3. http.disconnect while the app still runs ---------------------------------------------

@dataclass(frozen=True)
class DisconnectExpectation:
    received: str
    sent: str
    reason: str = ""


DISCONNECT_MID_REQUEST = {
    "uvicorn": DisconnectExpectation(
        "received wait-disconnect http.disconnect type",
        "sent wait-disconnect ok",
        "expected difference: uvicorn's httptools protocol (0.54) drops send() after a "
        "disconnect silently; the ASGI HTTP spec (2.4) says send() on a closed connection "
        "should raise an OSError subclass, which uringapi does."),
    "uringapi": DisconnectExpectation(
        "received wait-disconnect http.disconnect type",
        "sent wait-disconnect raised:ClientDisconnected:oserror"),
}


@pytest.mark.parametrize("kind", ["uvicorn", "uringapi"])
def test_disconnect_while_app_runs(pair: dict[str, Probed], kind: str) -> None:
    """The client goes away after sending its request while the app still waits in
    receive(): the app must get http.disconnect (a hang guard bounds the wait; this is no
    speed assertion), and its send() afterwards raises an OSError subclass that the server
    does not log as an error."""
    p = pair[kind]
    p.reset_events()
    log_before = len(p.server.stderr())
    s = socket.create_connection((HOST, p.server.port), timeout=READ_TIMEOUT)
    try:
        s.sendall(req("POST", "/wait-disconnect", body=b"12345", close=False))
        p.wait_event("body-done wait-disconnect")
    finally:
        s.close()
    want = DISCONNECT_MID_REQUEST[kind]
    assert p.wait_event("received wait-disconnect") == want.received
    assert p.wait_event("sent wait-disconnect") == want.sent
    time.sleep(0.3)  # let the server log whatever it logs for the request's end
    log = p.server.stderr()[log_before:]
    assert "Traceback" not in log and not re.search(r"\bERROR\b", log), log
