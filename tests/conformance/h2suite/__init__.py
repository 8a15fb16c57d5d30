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


# The known deviations, all from the h2 crate (0.4), which reads the frames.
HPACK_CODE = ("h2 reports an HPACK decoding error as PROTOCOL_ERROR, not COMPRESSION_ERROR "
              "(still a connection error, GOAWAY then close)")
TRAILER_PSEUDO = ("h2 drops pseudo-header fields from trailers instead of treating the "
                  "request as malformed")
