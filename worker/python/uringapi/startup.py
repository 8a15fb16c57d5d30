"""--timeout-worker-startup, kept by the worker itself: a worker whose import of the app or
whose lifespan startup runs past it logs where it was and ends with an ``error:``. The front
end's own wait covers only the first workers, and could not say where they were; this also
ends a replacement (rolling restart, recycling, respawn) that would otherwise wait for ever
while its old worker served on."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Callable, NoReturn

logger = logging.getLogger("uringapi.error")

#: When this process started: the limit counts from here.
STARTED = time.monotonic()

HINT = "the log above shows where it was; raise --timeout-worker-startup if it is only slow, or fix the app"


class StartupLimit:
    """`seconds` (URINGAPI_STARTUP_TIMEOUT; 0 or less: no limit) from the process start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float | None:
        """Seconds left of the limit (None: no limit)."""
        if self.seconds <= 0:
            return None
        return max(STARTED + self.seconds - time.monotonic(), 0.0)

    def watch_import(self, spec: str, fail: Callable[[str, str], NoReturn]) -> threading.Timer | None:
        """A timer that, unless cancelled first, logs the main thread's stack and calls
        `fail` once the limit has passed (the import runs on the main thread; this one
        gets the GIL between its bytecodes, not while C code holds it)."""
        left = self.left()
        if left is None:
            return None
        main = threading.main_thread().ident

        def overdue() -> None:
            frame = sys._current_frames().get(main or 0)
            stack = "".join(traceback.format_stack(frame)).rstrip() if frame else "  (no frames)"
            logger.error("importing the app (%s) still running after %.1f s "
                         "(--timeout-worker-startup); it is here:\n%s", spec, self.seconds, stack)
            fail(f"importing the app did not finish within {self.seconds:g} s", HINT)

        timer = threading.Timer(left, overdue)
        timer.daemon = True
        timer.name = "uringapi-startup-limit"
        timer.start()
        return timer
