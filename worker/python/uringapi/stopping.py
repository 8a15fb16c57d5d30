"""How a worker stops: what a SIGTERM means to it, never outliving the front end, and an
exit that threads the app left running cannot hold past the graceful timeout."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

logger = logging.getLogger("uringapi.error")


#: The front end: a worker whose parent is another process has lost it.
FRONT_END_PID = os.getppid()


class Sigterm:
    """What a SIGTERM means to a serving worker. From the front end (it wrote
    stop_requested first), or with the front end gone: stop. From anyone else (an
    operator's `kill`, a signal to the whole process group such as systemd's default
    KillMode): ask the front end to replace this worker, as a gunicorn worker's SIGTERM
    does, and go on serving what the front end sends, requests in flight included, until it
    stops this one (during the front end's own shutdown: once its connections drained). A
    second such SIGTERM, or no word from the front end within the graceful timeout plus
    5 s, stops the worker anyway."""

    def __init__(self, native: Any, loop: asyncio.AbstractEventLoop, grace: float) -> None:
        self.native, self.loop, self.grace = native, loop, grace
        self.stop = asyncio.Event()
        self.asked = False

    def __call__(self) -> None:
        if self.stop.is_set():
            return
        if self.native.stop_requested() or os.getppid() != FRONT_END_PID or self.asked:
            self.stop.set()
            return
        self.asked = True
        # Debug only: the front end logs the replacement when it makes one, and a SIGTERM to
        # the whole group (systemd's stop, `timeout`) reaches the workers as the front end
        # begins its own shutdown, when there is nothing to report.
        logger.debug("SIGTERM not sent by the uringapi front end: asking it to replace this "
                     "worker, which serves on until then")
        self.native.ask_replacement()
        self.loop.call_later(self.grace + 5, self._give_up)
        self.loop.call_later(1.0, self._watch_parent)

    def _watch_parent(self) -> None:
        # A dying front end's threads exit one by one, and the kernel sends the death
        # signal at each hand-over of its children: the first may come while getppid()
        # still names the front end (handed to one of its other threads).
        if os.getppid() != FRONT_END_PID:
            self.stop.set()
        elif not self.stop.is_set():
            self.loop.call_later(1.0, self._watch_parent)

    def _give_up(self) -> None:
        if not self.stop.is_set():
            logger.warning("the front end did not stop this worker within %g s of its "
                           "SIGTERM; stopping anyway", self.grace + 5)
            self.stop.set()


def die_with_the_front_end() -> None:
    """SIGTERM when the front end dies (killed, OOM): a worker never outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != FRONT_END_PID:  # gone before the prctl
        os._exit(1)


PR_SET_PDEATHSIG = 1


#: The least time `bound_the_exit` leaves threads and atexit handlers past the deadline.
EXIT_WAIT = 0.5
#: Seconds the tasks cancelled by `cancel_leftovers` have to finish.
LEFTOVER_WAIT = 0.5


async def cancel_leftovers() -> None:
    """Cancels the tasks still running once requests and lifespan shutdown are done (work
    the app started and left to run: a poller, a fire-and-forget task), as ``asyncio.run``
    does at its end, so that their ``finally`` blocks and context managers run; closing the
    loop over them skipped those without a word. What their clean-up raises is logged."""
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if not left:
        return
    for task in left:
        task.cancel()
    done, pending = await asyncio.wait(left, timeout=LEFTOVER_WAIT)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.error("a task the app left running (%s) raised when cancelled at shutdown",
                         task.get_name(), exc_info=task.exception())
    logger.debug("%d task(s) still running at shutdown cancelled; %d ignored it", len(left), len(pending))


def bound_the_exit(deadline: float) -> None:
    """Python's exit joins every non-daemon thread the app started, then runs its atexit
    handlers: a thread that never ends (a poller started without ``daemon=True``) would hold
    the worker until the front end kills it, and the kill would say nothing of why. They get
    until `deadline` (the end of the graceful timeout; at least EXIT_WAIT from now), then the
    worker names them in the log and exits. (uvicorn ends at once, by re-raising the
    signal; gunicorn waits for its graceful timeout, then kills.)"""

    def watch() -> None:
        time.sleep(max(deadline - time.monotonic(), EXIT_WAIT))
        main = threading.main_thread()
        left = [t.name for t in threading.enumerate() if t is not main and not t.daemon]
        held = (f"{len(left)} non-daemon thread(s) the app started ({', '.join(left)})"
                if left else "the app's exit handlers (atexit)")
        logger.warning("%s still running after lifespan shutdown and the graceful timeout: "
                       "exiting without them", held)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    threading.Thread(target=watch, name="uringapi-exit-watch", daemon=True).start()
