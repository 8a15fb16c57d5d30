"""Unmodified FastAPI features that parse or wrap requests and responses
(tests/apps/fastapi_forms_app.py), through the real server: a multipart upload of several
files with a form field, a URL-encoded form, a CORS preflight and a CORS response, GZip,
the redirect to a route's trailing slash, and url_for. Each also passes under uvicorn
(URINGAPI_TEST_SERVER=uvicorn)."""

from __future__ import annotations

import gzip
import hashlib
import random
from typing import Iterator

import httpx
import pytest

from harness import Server, ServerFactory


@pytest.fixture(scope="module")
def forms_server(servers: ServerFactory) -> Server:
    return servers.start("fastapi_forms_app:app", workers=2, threads=1, probe_path="/items/")


@pytest.fixture
def client(forms_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=forms_server.base_url, timeout=30) as c:
        yield c


def test_multipart_upload_of_several_files_and_a_field(client: httpx.Client) -> None:
    blobs = {"small.txt": b"hello\r\n--not-a-boundary\r\n",
             "big.bin": random.Random(7).randbytes(5 * 1024 * 1024 + 3),
             "empty.dat": b""}
    files = [("files", (name, data, "application/octet-stream")) for name, data in blobs.items()]
    r = client.post("/upload", files=files, data={"note": "née ✓"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["note"] == "née ✓"
    assert [(f["name"], f["size"], f["sha256"]) for f in got["files"]] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in blobs.items()]


def test_multipart_upload_sent_chunked(client: httpx.Client) -> None:
    body = random.Random(8).randbytes(300_000)
    boundary = "b0undary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
               f"filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    payload += body + f"\r\n--{boundary}--\r\n".encode()

    def pieces() -> Iterator[bytes]:  # no length: httpx sends it chunked
        for i in range(0, len(payload), 7000):
            yield payload[i:i + 7000]

    r = client.post("/upload", content=pieces(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert r.json()["files"] == [{"name": "a.bin", "type": "application/octet-stream",
                                  "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}]


def test_urlencoded_form_and_a_missing_field(client: httpx.Client) -> None:
    r = client.post("/login", data={"user": "ann & bob", "password": "p=1;2"})
    assert r.json() == {"user": "ann & bob", "password_len": 5}
    r = client.post("/login", data={"user": "ann"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "password"]


def test_cors_preflight_and_simple_request(client: httpx.Client) -> None:
    r = client.options("/login", headers={"origin": "https://app.example",
                                          "access-control-request-method": "POST",
                                          "access-control-request-headers": "x-token"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-max-age"] == "600"
    r = client.options("/login", headers={"origin": "https://evil.example",
                                          "access-control-request-method": "POST"})
    assert r.status_code == 400
    r = client.get("/items/", headers={"origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_gzip_only_when_asked_and_large_enough(forms_server: Server) -> None:
    with httpx.Client(base_url=forms_server.base_url, timeout=30) as c:
        r = c.get("/text?n=2000", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.json() == {"text": "abc" * 2000}  # httpx decoded it
        raw = c.get("/text?n=2000", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in raw.headers
        small = c.get("/text?n=3", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers
    with httpx.Client(base_url=forms_server.base_url, timeout=30) as c:
        with c.stream("GET", "/text?n=5000", headers={"accept-encoding": "gzip"}) as r:
            wire = b"".join(r.iter_raw())
        assert gzip.decompress(wire) == b'{"text":"' + b"abc" * 5000 + b'"}'


def test_redirect_to_the_trailing_slash_and_url_for(forms_server: Server) -> None:
    with httpx.Client(base_url=forms_server.base_url, timeout=30) as c:
        r = c.get("/items?x=1", headers={"host": "api.example:8443"})
        assert r.status_code == 307
        assert r.headers["location"] == "http://api.example:8443/items/?x=1"
        r = c.get("/where?q=1", headers={"host": "api.example"})
        assert r.json() == {"url_for": "http://api.example/where",
                            "url": "http://api.example/where?q=1", "client_host": "127.0.0.1"}
