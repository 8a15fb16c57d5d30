"""The app named by ``BENCH_GC_FREEZE_TARGET`` (``module:attr``), imported and then
``gc.freeze()``-d, as uringapi's worker does after its lifespan startup.

The harness gives granian and uvicorn ``gc_frozen:app`` instead of the cell's own
target, so that every server's worker process runs with the app's import-time
objects moved out of the collector's reach; no server gets an advantage from it
alone. ``app`` is the target itself, not a wrapper: requests cost nothing extra.
Each worker process imports this module, so each one freezes its own heap.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

_module, _, _attr = os.environ["BENCH_GC_FREEZE_TARGET"].partition(":")
app = getattr(importlib.import_module(_module), _attr)
gc.collect()
gc.freeze()
print(f"gc_frozen: {_module}:{_attr} imported, {gc.get_freeze_count()} objects frozen", file=sys.stderr, flush=True)
