"""uringapi: ASGI apps served from an io_uring front end and separate uvloop workers.

Run ``uringapi serve module:app --workers N``. The front end (Rust) accepts connections and
parses HTTP; each worker process imports the app once and serves requests it reads from
shared memory. See the README for the architecture and every flag.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("uringapi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
