"""Apps for ``benches/benches/worker_cpu.rs`` (worker CPU per request, no sockets).

- ``noop``: the least an ASGI app can do: ``http.response.start``, then a body of ``ok``.
- ``scope``: the same, after reading every scope field and every header, as a framework's
  routing and request object do. Its difference to ``noop`` is the cost of using the scope.

Neither supports lifespan: they return at once, which the worker takes as "unsupported".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


async def noop(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send(START)
    await send(BODY)


def read_scope(scope: Scope) -> int:
    """Reads every value of the scope (nested ones too) and every header byte string."""
    seen = 0
    for value in scope.values():
        if isinstance(value, dict):
            seen += len(value)
        elif value is not None:
            seen += 1
    for name, value in scope["headers"]:
        seen += len(name) + len(value)
    client, server = scope["client"], scope["server"]
    return seen + len(client[0]) + client[1] + len(server[0]) + server[1]


async def scope(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    read_scope(scope)
    await send(START)
    await send(BODY)
