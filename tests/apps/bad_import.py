"""An app module that fails while it is imported, as a missing dependency would.

Each import attempt appends "import <pid>" to URINGAPI_TEST_EVENT_LOG when it is set,
so a test can count how many times the server tried (it must not respawn forever)."""

import os

_log = os.environ.get("URINGAPI_TEST_EVENT_LOG")
if _log:
    with open(_log, "a") as f:
        f.write(f"import {os.getpid()}\n")

raise ImportError("bad_import: this module fails to import on purpose")
