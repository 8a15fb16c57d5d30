"""TLS in the front end (issue 16): HTTPS through httpx, the ASGI tls extension, mutual
TLS, certificate reload on SIGHUP under load, bad clients on the TLS port, start-up errors
for bad TLS files, and the --ktls fallback.

Certificates are made by the `openssl` CLI in a session fixture: a test CA, two server
certificates it signed (for the reload), a client certificate, an encrypted PKCS#8 key and a
key that matches nothing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

import rawhttp
from harness import HOST, Server, ServerFactory

pytestmark = pytest.mark.uringapi_only

HANG_GUARD = 60.0  # seconds: a bound against hangs, never a speed claim


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, name: str, subject: str, ext: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.ec", cwd=d)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", f"{name}.ec", "-out", f"{name}.key", cwd=d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "3", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed (the Makefile installs it)")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=uringapi test CA",
             cwd=d)
    server_ext = ("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                  "extendedKeyUsage=serverAuth\n")
    _issue(d, "server", "/CN=localhost/O=first", server_ext)
    _issue(d, "server2", "/CN=localhost/O=second", server_ext)
    _issue(d, "client", "/CN=alice/O=uringapi tests",
           "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "server.key", "-out", "server-enc.key",
             "-passout", "pass:sesame", cwd=d)
    (d / "garbage.pem").write_text("this is not PEM\n")
    # A client certificate no CA of ours vouches for (self-signed).
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "mallory.key", "-out", "mallory.pem", "-days", "3", "-subj", "/CN=mallory",
             "-addext", "extendedKeyUsage=clientAuth", cwd=d)
    return d


def _client_ctx(certs: Path, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return ctx


def _url(server: Server, path: str = "/") -> str:
    return f"https://{HOST}:{server.port}{path}"


def _tls_args(certs: Path, *extra: str) -> tuple[str, ...]:
    return ("--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
            *extra)


def _start(servers: ServerFactory, certs: Path, *extra: str, client_cert: bool = False,
           app: str = "tls_app:app", probe: str = "/", **kwargs) -> Server:
    """Starts the TLS app server and waits (bounded) for one HTTPS answer."""
    server = servers.start(app, probe_path=None, extra_args=extra, **kwargs)
    ctx = _client_ctx(certs, client_cert)
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            if httpx.get(_url(server, probe), verify=ctx, timeout=10).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"TLS server never answered\n{server.diagnostics()}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def tls_server(servers: ServerFactory, certs: Path) -> Server:
    return _start(servers, certs, *_tls_args(certs, "--timeout-header-read", "1"))


def _client_hello(certs: Path) -> bytes:
    """The first flight of a real TLS client, captured through memory BIOs."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _client_ctx(certs).wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:16]
    return hello


def _read_to_close(sock: socket.socket) -> bytes:
    sock.settimeout(HANG_GUARD)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _peer_cert(server: Server, certs: Path) -> bytes:
    with socket.create_connection((HOST, server.port), timeout=HANG_GUARD) as raw:
        with _client_ctx(certs).wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.getpeercert(binary_form=True)


def _pem_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


# ---- HTTPS basics and the scope -------------------------------------------------------

def test_https_get_and_post_with_scheme_https(tls_server: Server, certs: Path) -> None:
    ctx = _client_ctx(certs)
    with httpx.Client(verify=ctx, timeout=HANG_GUARD) as client:
        got = client.get(_url(tls_server, "/hello"))
        assert got.status_code == 200
        assert got.json()["scheme"] == "https"
        # Keep-alive: the second request rides the same TLS session.
        body = "x" * 100_000
        posted = client.post(_url(tls_server, "/echo"), content=body)
        assert posted.status_code == 200
        assert posted.json()["body"] == body
        assert posted.http_version == "HTTP/1.1"


def test_front_end_answers_go_through_tls_too(servers: ServerFactory, certs: Path,
                                              tmp_path: Path) -> None:
    """Static files and the health path are written by the front end itself: over TLS they
    must be encrypted like app responses (never sent in the clear)."""
    blob = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    server = _start(servers, certs, *_tls_args(certs, "--static-mount", f"/static={tmp_path}",
                                               "--health-path", "/healthz"))
    with httpx.Client(verify=_client_ctx(certs), timeout=HANG_GUARD) as client:
        got = client.get(_url(server, "/static/blob.bin"))
        assert got.status_code == 200
        assert got.content == blob
        assert client.get(_url(server, "/healthz")).status_code == 200
        assert client.get(_url(server, "/")).json()["scheme"] == "https"
    server.stop()


def test_tls_extension_in_the_scope(tls_server: Server, certs: Path) -> None:
    got = httpx.get(_url(tls_server), verify=_client_ctx(certs), timeout=HANG_GUARD).json()
    tls = got["tls"]
    assert tls is not None, got
    assert tls["tls_version"] == 0x0304
    # TLS 1.3 suites are 0x1301-0x1303 (IANA).
    assert 0x1301 <= tls["cipher_suite"] <= 0x1303, tls
    assert ssl.PEM_cert_to_DER_cert(tls["server_cert"]) == _pem_der(certs / "server.pem")
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None


def test_tls_extension_over_tls12(tls_server: Server, certs: Path) -> None:
    ctx = _client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    tls = httpx.get(_url(tls_server), verify=ctx, timeout=HANG_GUARD).json()["tls"]
    assert tls["tls_version"] == 0x0303
    assert tls["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256


def test_alpn_prefers_h2_and_offers_http11(tls_server: Server, certs: Path) -> None:
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = _client_ctx(certs)
        ctx.set_alpn_protocols(offered)
        with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                assert tls.selected_alpn_protocol() == chosen
                assert tls.version() == "TLSv1.3"


def test_server_prefers_aes128_gcm_when_the_cpu_has_aes(tls_server: Server, certs: Path) -> None:
    """OpenSSL clients list AES-256-GCM first; with AES in hardware the server picks
    AES-128-GCM (as Go's crypto/tls does), else the client's choice stands."""
    flags = set(Path("/proc/cpuinfo").read_text().split())
    want = "TLS_AES_128_GCM_SHA256" if {"aes", "pclmulqdq"} <= flags else "TLS_AES_256_GCM_SHA384"
    with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as raw:
        with _client_ctx(certs).wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.cipher()[0] == want


def test_tls12_still_accepted_by_default(tls_server: Server, certs: Path) -> None:
    ctx = _client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    got = httpx.get(_url(tls_server), verify=ctx, timeout=HANG_GUARD)
    assert got.status_code == 200
    assert got.json()["scheme"] == "https"


def test_protocol_min_13_refuses_tls12(servers: ServerFactory, certs: Path) -> None:
    server = _start(servers, certs, *_tls_args(certs, "--ssl-protocol-min", "1.3"))
    ctx = _client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.TransportError):
        httpx.get(_url(server), verify=ctx, timeout=HANG_GUARD)
    assert httpx.get(_url(server), verify=_client_ctx(certs), timeout=HANG_GUARD).status_code == 200
    server.stop()


def _session(server: Server, ctx: ssl.SSLContext,
             session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession, bool]:
    """One request on a new TLS connection (resuming `session` if given): the session to
    resume next time, and whether this one was resumed."""
    with socket.create_connection((HOST, server.port), timeout=HANG_GUARD) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert _read_to_close(tls).startswith(b"HTTP/1.1 200 ")
            assert tls.session is not None
            return tls.session, tls.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
def test_a_session_resumes_after_260_others_and_a_reload(servers: ServerFactory, certs: Path,
                                                         version: ssl.TLSVersion) -> None:
    """A returning client skips the full handshake. Sessions were kept in rustls's default
    cache of 256: the 257th client on pushed the oldest out, and none of them resumed (nor
    any after a SIGHUP, which made a new cache). Now tickets carry them, with a key kept
    across reloads, and the id cache holds OpenSSL's 20,480."""
    server = _start(servers, certs, *_tls_args(certs))
    ctx = _client_ctx(certs)
    ctx.minimum_version = ctx.maximum_version = version
    first, _ = _session(server, ctx)
    for _ in range(260):
        _session(server, ctx)
    first, resumed = _session(server, ctx, first)
    assert resumed, "a session stopped resuming after 260 others"
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"rolling restart", HANG_GUARD)
    _, resumed = _session(server, ctx, first)
    assert resumed, "a session stopped resuming after a SIGHUP reload"
    server.stop()


def test_a_reload_that_changes_the_client_ca_ends_resumption(servers: ServerFactory,
                                                              certs: Path, tmp_path: Path) -> None:
    """Sessions outlive a SIGHUP reload, but not one that changes which client certificates
    are good: a session resumed skips the certificate check, so a CA dropped from
    --ssl-ca-certs would still let its clients in. Same CA file: the session resumes; a new
    one: it does not, and alice's certificate, which the new CA did not sign, is refused."""
    ca = tmp_path / "ca.pem"
    shutil.copy(certs / "ca.pem", ca)
    server = _start(servers, certs, *_tls_args(certs, "--ssl-ca-certs", str(ca),
                                               "--ssl-cert-reqs", "2"), client_cert=True)
    ctx = _client_ctx(certs, client_cert=True)
    first, _ = _session(server, ctx)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"rolling restart", HANG_GUARD)
    first, resumed = _session(server, ctx, first)
    assert resumed, "an mTLS session did not resume after a reload that changed nothing"
    shutil.copy(certs / "mallory.pem", ca)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + HANG_GUARD
    while len(re.findall(r"rolling restart", server.stderr())) < 2:
        assert time.monotonic() < deadline, server.diagnostics()
        time.sleep(0.05)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _, resumed = _session(server, ctx, first)
        pytest.fail(f"served under the new CA (resumed: {resumed})")
    server.stop()


# ---- mutual TLS -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mtls_required(servers: ServerFactory, certs: Path) -> Server:
    return _start(servers, certs, *_tls_args(certs, "--ssl-ca-certs", str(certs / "ca.pem"),
                                             "--ssl-cert-reqs", "2"), client_cert=True)


@pytest.fixture(scope="module")
def mtls_optional(servers: ServerFactory, certs: Path) -> Server:
    return _start(servers, certs, *_tls_args(certs, "--ssl-ca-certs", str(certs / "ca.pem"),
                                             "--ssl-cert-reqs", "1"))


def test_mtls_required_refuses_a_client_without_certificate(mtls_required: Server,
                                                            certs: Path) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(_url(mtls_required), verify=_client_ctx(certs), timeout=HANG_GUARD)


def test_mtls_required_serves_a_client_with_certificate(mtls_required: Server,
                                                        certs: Path) -> None:
    got = httpx.get(_url(mtls_required), verify=_client_ctx(certs, client_cert=True),
                    timeout=HANG_GUARD)
    assert got.status_code == 200
    assert got.json()["scheme"] == "https"
    tls = got.json()["tls"]
    chain = [ssl.PEM_cert_to_DER_cert(p) for p in tls["client_cert_chain"]]
    # Leaf first; OpenSSL adds the CA it found in its trust store after it.
    assert chain[0] == _pem_der(certs / "client.pem")
    assert chain[1:] in ([], [_pem_der(certs / "ca.pem")])
    # RFC 4514: the last RDN first.
    assert tls["client_cert_name"] == "O=uringapi tests,CN=alice"
    assert tls["client_cert_error"] is None


def test_mtls_optional_serves_both(mtls_optional: Server, certs: Path) -> None:
    without = httpx.get(_url(mtls_optional), verify=_client_ctx(certs), timeout=HANG_GUARD)
    assert without.status_code == 200
    assert without.json()["tls"]["client_cert_chain"] == []
    with_cert = httpx.get(_url(mtls_optional), verify=_client_ctx(certs, client_cert=True),
                          timeout=HANG_GUARD)
    assert with_cert.status_code == 200
    assert with_cert.json()["tls"]["client_cert_name"] == "O=uringapi tests,CN=alice"


def test_mtls_optional_refuses_a_certificate_that_fails_verification(mtls_optional: Server,
                                                                    certs: Path) -> None:
    """--ssl-cert-reqs 1 does what OpenSSL's CERT_OPTIONAL (uvicorn's 1) does: no certificate
    is fine, a certificate that does not verify ends the handshake. So no app ever sees
    client_cert_error set: it is None without a certificate and with a verified one."""
    rogue = _client_ctx(certs)
    rogue.load_cert_chain(str(certs / "mallory.pem"), str(certs / "mallory.key"))
    with pytest.raises(httpx.TransportError):
        httpx.get(_url(mtls_optional), verify=rogue, timeout=HANG_GUARD)
    for client_cert, name in ((False, None), (True, "O=uringapi tests,CN=alice")):
        got = httpx.get(_url(mtls_optional), verify=_client_ctx(certs, client_cert),
                        timeout=HANG_GUARD)
        assert got.status_code == 200
        tls = got.json()["tls"]
        assert (tls["client_cert_name"], tls["client_cert_error"]) == (name, None)


# ---- bad clients on the TLS port ------------------------------------------------------

def test_plain_http_on_the_tls_port_is_closed(tls_server: Server, certs: Path) -> None:
    with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_to_close(s)
    # At most a TLS alert record (content type 21), never an HTTP answer.
    assert not data.startswith(b"HTTP/"), data[:64]
    assert data == b"" or data[0] == 0x15, data[:16]
    assert httpx.get(_url(tls_server), verify=_client_ctx(certs)).status_code == 200


def test_garbage_on_the_tls_port_is_closed(tls_server: Server, certs: Path) -> None:
    with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as s:
        s.sendall(os.urandom(4096))
        data = _read_to_close(s)
    assert not data.startswith(b"HTTP/")
    assert httpx.get(_url(tls_server), verify=_client_ctx(certs)).status_code == 200


def test_truncated_handshake_is_closed(tls_server: Server, certs: Path) -> None:
    hello = _client_hello(certs)
    with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as s:
        s.sendall(hello[: len(hello) // 2])
        s.shutdown(socket.SHUT_WR)
        data = _read_to_close(s)
    assert not data.startswith(b"HTTP/")
    assert httpx.get(_url(tls_server), verify=_client_ctx(certs)).status_code == 200


def test_stalled_handshake_is_closed_after_header_timeout(tls_server: Server,
                                                          certs: Path) -> None:
    hello = _client_hello(certs)
    with socket.create_connection((HOST, tls_server.port), timeout=HANG_GUARD) as s:
        s.sendall(hello[: len(hello) // 2])
        started = time.monotonic()
        # Other clients are served while this one stalls.
        for _ in range(3):
            got = httpx.get(_url(tls_server), verify=_client_ctx(certs), timeout=HANG_GUARD)
            assert got.status_code == 200
        data = _read_to_close(s)
        waited = time.monotonic() - started
    assert data == b"" or data[0] == 0x15, data[:16]
    # --timeout-header-read is 1 s: the server cannot have closed it sooner.
    assert waited >= 0.9, waited


# ---- certificate reload on SIGHUP -----------------------------------------------------

def test_sighup_reloads_the_certificate_under_load(servers: ServerFactory, certs: Path,
                                                   tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    for name in ("server.pem", "server.key"):
        shutil.copy(certs / name, live / name)
    server = _start(servers, certs, "--ssl-certfile", str(live / "server.pem"),
                    "--ssl-keyfile", str(live / "server.key"), workers=2)
    assert _peer_cert(server, certs) == _pem_der(certs / "server.pem")

    stop = threading.Event()
    results = {"ok": 0, "failed": []}
    lock = threading.Lock()

    def new_connections() -> None:
        ctx = _client_ctx(certs)
        while not stop.is_set():
            try:
                status = httpx.get(_url(server), verify=ctx, timeout=HANG_GUARD).status_code
                outcome = None if status == 200 else f"status {status}"
            except httpx.TransportError as e:
                outcome = repr(e)
            with lock:
                if outcome is None:
                    results["ok"] += 1
                else:
                    results["failed"].append(outcome)

    def keep_alive() -> None:
        with httpx.Client(verify=_client_ctx(certs), timeout=HANG_GUARD) as client:
            while not stop.is_set():
                try:
                    status = client.post(_url(server), content=b"k" * 1000).status_code
                    outcome = None if status == 200 else f"status {status}"
                except httpx.TransportError as e:
                    outcome = repr(e)
                with lock:
                    if outcome is None:
                        results["ok"] += 1
                    else:
                        results["failed"].append(outcome)

    load = [threading.Thread(target=new_connections), threading.Thread(target=keep_alive)]
    for t in load:
        t.start()
    try:
        time.sleep(0.5)
        for name in ("server.pem", "server.key"):
            shutil.copy(certs / name.replace("server", "server2"), live / (name + ".new"))
        os.replace(live / "server.key.new", live / "server.key")
        os.replace(live / "server.pem.new", live / "server.pem")
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + HANG_GUARD
        while _peer_cert(server, certs) != _pem_der(certs / "server2.pem"):
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in load:
            t.join(HANG_GUARD)
    assert results["failed"] == [], results["failed"][:5]
    assert results["ok"] > 0
    # The scope's tls extension names the new certificate too, on every worker (each keeps
    # the PEM it made last, while the certificate repeats).
    for _ in range(6):
        got = httpx.get(_url(server), verify=_client_ctx(certs), timeout=HANG_GUARD).json()
        assert ssl.PEM_cert_to_DER_cert(got["tls"]["server_cert"]) == _pem_der(certs / "server2.pem")

    # A broken file on the next SIGHUP: logged, and the certificate in force stays.
    (live / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + HANG_GUARD
    while "TLS files not reloaded" not in server.stderr():
        assert time.monotonic() < deadline, server.stderr_tail()
        time.sleep(0.1)
    assert _peer_cert(server, certs) == _pem_der(certs / "server2.pem")
    assert httpx.get(_url(server), verify=_client_ctx(certs)).status_code == 200
    server.stop()


# ---- start-up errors ------------------------------------------------------------------

STARTUP_ERRORS = [
    # (id, args from the certs dir, words the error line must hold)
    ("missing-key-file", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "nope.key"],
     "cannot read the private key"),
    ("cert-not-pem", ["--ssl-certfile", "garbage.pem", "--ssl-keyfile", "server.key"],
     "holds no certificate"),
    ("key-does-not-match", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server2.key"],
     "does not match the certificate"),
    ("encrypted-no-password", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server-enc.key"],
     "is encrypted and no password was given"),
    ("encrypted-wrong-password", ["--ssl-certfile", "server.pem", "--ssl-keyfile",
                                  "server-enc.key", "--ssl-keyfile-password", "wrong"],
     "cannot decrypt the private key"),
    ("cert-without-key", ["--ssl-certfile", "server.pem"], "without --ssl-keyfile"),
    ("ciphers-without-tls", ["--ssl-ciphers", "TLS_AES_128_GCM_SHA256"],
     "--ssl-ciphers was given without --ssl-certfile"),
    ("protocol-min-without-tls", ["--ssl-protocol-min", "1.3"],
     "--ssl-protocol-min was given without --ssl-certfile"),
    ("mtls-without-ca", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key",
                         "--ssl-cert-reqs", "2"], "needs --ssl-ca-certs"),
    ("unknown-cipher", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key",
                        "--ssl-ciphers", "RC4-MD5"], "\"RC4-MD5\", a cipher suite rustls does not have"),
    ("protocol-min-11", ["--ssl-certfile", "server.pem", "--ssl-keyfile", "server.key",
                         "--ssl-protocol-min", "1.1"], "is not a TLS version"),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in STARTUP_ERRORS],
                         ids=[c[0] for c in STARTUP_ERRORS])
def test_startup_error(servers: ServerFactory, certs: Path, args: list[str], words: str) -> None:
    resolved = [str(certs / a) if a.endswith((".pem", ".key")) else a for a in args]
    server = servers.spawn("tls_app:app", extra_args=tuple(resolved))
    code = server.wait_exit(HANG_GUARD)
    err = server.stderr()
    assert code == 2, err
    lines = err.splitlines()
    error = [ln for ln in lines if ln.startswith("error: ")]
    assert error and words in error[0], err
    assert any(ln.startswith("hint: ") for ln in lines), err


def test_encrypted_key_with_its_password_serves(servers: ServerFactory, certs: Path) -> None:
    server = _start(servers, certs, "--ssl-certfile", str(certs / "server.pem"),
                    "--ssl-keyfile", str(certs / "server-enc.key"),
                    env={"URINGAPI_SSL_KEYFILE_PASSWORD": "sesame"})
    assert httpx.get(_url(server), verify=_client_ctx(certs)).json()["scheme"] == "https"
    server.stop()


def test_chosen_cipher_is_used(servers: ServerFactory, certs: Path) -> None:
    server = _start(servers, certs, *_tls_args(certs, "--ssl-ciphers",
                                               "TLS_CHACHA20_POLY1305_SHA256"))
    with socket.create_connection((HOST, server.port), timeout=HANG_GUARD) as raw:
        with _client_ctx(certs).wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"
    server.stop()


# ---- --ktls ---------------------------------------------------------------------------

def test_ktls_falls_back_with_one_log_line(servers: ServerFactory, certs: Path) -> None:
    server = _start(servers, certs, *_tls_args(certs, "--ktls"))
    got = httpx.get(_url(server), verify=_client_ctx(certs), timeout=HANG_GUARD)
    assert got.status_code == 200
    lines = [ln for ln in server.stderr().splitlines() if "--ktls:" in ln]
    assert len(lines) == 1, server.stderr_tail()
    # This machine's kernel has no CONFIG_TLS: the fallback line. A kernel with kTLS gets
    # the other line; rustls encrypts either way.
    assert ("no kTLS" in lines[0]) != ("has kTLS" in lines[0]), lines[0]
    if "no kTLS" in lines[0]:
        assert "encrypted by rustls" in lines[0], lines[0]
    server.stop()


def test_ktls_serves_pathsend_and_static_files_whole(servers: ServerFactory, certs: Path,
                                                     tmp_path: Path) -> None:
    """The file paths --ktls changes (sendfile where the kernel has kTLS; rustls here): whole
    bodies, and the connection goes on after them."""
    static = tmp_path / "static"
    static.mkdir()
    blob = bytes((i * 13 + i // 509) & 0xFF for i in range(300_007))  # past the small-file cache
    (static / "blob.bin").write_bytes(blob)
    server = _start(servers, certs, *_tls_args(certs, "--ktls", "--static-mount",
                                               f"/static={static}"),
                    app="files_app:app", probe="/messages", workers=1, threads=1)
    big = bytes((i * 7 + i // 251) & 0xFF for i in range(1024 * 1024 + 3))  # files_app's /big
    with httpx.Client(verify=_client_ctx(certs), timeout=HANG_GUARD) as client:
        for _ in range(2):
            got = client.get(_url(server, "/big"))
            assert (got.status_code, got.content == big) == (200, True)
            got = client.get(_url(server, "/static/blob.bin"))
            assert (got.status_code, got.content == blob) == (200, True)
        assert client.get(_url(server, "/messages")).status_code == 200
    server.stop()



# ---- clients that stop reading -----------------------------------------------------------

def test_tls_clients_that_stop_reading_hold_up_no_other_request(servers: ServerFactory,
                                                                certs: Path) -> None:
    """As over plain HTTP (test_misbehaving_workers): 24 HTTPS clients that stop reading a
    16 MiB download leave the worker's other requests alone, and a stalled download read
    again later is exact. rustls used to hold a response's slot until its records were
    written, and the records behind it in their slots as well: sixteen such clients took
    every response slot of the worker."""
    server = _start(servers, certs, *_tls_args(certs), app="misbehave_app:app", probe="/pid",
                    workers=1, threads=1)
    ctx = _client_ctx(certs)
    ctx.set_alpn_protocols(["http/1.1"])
    n = 16 << 20
    stalled = []
    for _ in range(24):
        c = rawhttp.Connection(server.host, server.port, timeout=HANG_GUARD, tls=ctx)
        c.send(rawhttp.build_request("GET", f"/slow?n={n}&chunk=65536&once=0",
                                     [("Connection", "close")]))
        while len(c._buf) < 256 << 10:
            assert c._fill(), "closed before the download was under way"
        stalled.append(c)
    time.sleep(0.3)  # the worker sends what it may meanwhile
    for _ in range(5):
        with rawhttp.Connection(server.host, server.port, timeout=HANG_GUARD, tls=ctx) as c:
            r = c.request("GET", "/pid", [("Connection", "close")])
        assert r.status == 200, (r.status, r.body[:200])
    resp = stalled[0].read_response()
    assert resp.status == 200 and len(resp.body) == n, (resp.status, len(resp.body))
    assert resp.body == random.Random(n).randbytes(n), "the body is what the app sent"
    for c in stalled:
        c.close()
