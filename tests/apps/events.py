"""Test apps append what happened to the file named by URINGAPI_TEST_EVENT_LOG, one line per
event ("event pid [extra ...]"), so tests can see inside worker processes."""

import os


def record(event: str, *extra: object) -> None:
    path = os.environ.get("URINGAPI_TEST_EVENT_LOG")
    if not path:
        return
    line = " ".join([event, str(os.getpid()), *map(str, extra)]) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
