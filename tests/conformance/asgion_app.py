"""The app that check_asgion.py serves: a test app from tests/apps wrapped in asgion's
Inspector, so that asgion watches, inside the uringapi worker, every scope the server
builds, every message receive() returns and every message the app sends.

ASGION_TARGET names the wrapped app ("probe_app:app"); each finished connection (and the
lifespan, at shutdown) writes one trace file into ASGION_TRACE_DIR, which records the
violations and in which phase asgion found them (scope, receive, send, complete). Details
of each violation (severity, message) go to ASGION_TRACE_DIR/violations.jsonl.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from asgion import Inspector, Violation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))

TRACE_DIR = Path(os.environ["ASGION_TRACE_DIR"])


def log_violation(v: Violation) -> None:
    line = json.dumps({"rule_id": v.rule_id, "severity": str(v.severity), "message": v.message,
                       "scope_type": v.scope_type, "method": v.method, "path": v.path,
                       "pid": os.getpid()})
    with open(TRACE_DIR / "violations.jsonl", "a") as f:
        f.write(line + "\n")


module_name, _, attr = os.environ["ASGION_TARGET"].partition(":")
inner = getattr(importlib.import_module(module_name), attr)
app = Inspector(inner, trace=True, trace_dir=TRACE_DIR, on_violation=log_violation)
