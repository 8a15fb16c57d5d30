"""uringapi's own HTTP/2 conformance suite (RFC 9113, RFC 7541), standing in for h2spec
where h2spec cannot be built (README, "HTTP/2"). Every case names the section it checks,
sends raw frames over one connection and asserts the outcome the RFC requires, accepting
exactly the alternatives it allows. `check_h2.py` runs them against a real server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .wire import Target


@dataclass(frozen=True)
class Case:
    section: str  # "RFC 9113 §6.5.2", "RFC 7541 §5.2", ...
    title: str
    run: Callable[[Target], None]
    # Why the server is known to deviate here (README, "HTTP/2", Known limits); the case
    # then counts as a known deviation only on exactly that outcome, and fails when it
    # passes (so that the mark is removed with the deviation).
    deviation: str | None = None


CASES: list[Case] = []


def case(section: str, title: str, deviation: str | None = None
         ) -> Callable[[Callable[[Target], None]], Callable[[Target], None]]:
    """Registers a case: `section` is where its requirement is written."""
    def register(fn: Callable[[Target], None]) -> Callable[[Target], None]:
        CASES.append(Case(section, title, fn, deviation))
        return fn
    return register


def all_cases() -> list[Case]:
    from . import cases_frames, cases_generic, cases_hpack, cases_http, cases_streams  # noqa: F401
    return CASES


# No known deviations today: the two h2 (0.4) had, an HPACK decoding error reported as
# PROTOCOL_ERROR and a pseudo-header field dropped from trailers, are caught by the frame
# meter's HPACK mirror before h2 reads the block (server/src/h2/hpack.rs).
