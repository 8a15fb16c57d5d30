"""A self-signed certificate for the HTTPS cells, made once by the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import paths

CERT_DIR = paths.WORK_DIR / "tls"


def files() -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made on first use (ECDSA P-256, as most sites)."""
    cert, key = CERT_DIR / "cert.pem", CERT_DIR / "key.pem"
    if not (cert.exists() and key.exists()):
        CERT_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert, key
