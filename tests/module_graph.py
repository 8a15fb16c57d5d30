#!/usr/bin/env python3
"""Import cycles between a crate's top-level modules (`crate::a` named in `b`'s non-test code).

A module owns a type and the others import it; two modules that name each other make a
cycle, and `make lint` fails on one. Prints the cycles found; with --edges, every edge.
Each source folder is one crate (`make lint` passes protocol, server, the server/cli command
and worker); arrows between crates are Cargo's to keep one-way.

Usage: python3 tests/module_graph.py [--edges] protocol/src server/src server/cli/src worker/src
"""

import re
import sys
from pathlib import Path

TEST_MODULE = re.compile(r"#\[cfg\((?:test|all\(test[^)]*\))\)\]\s*mod \w+\s*\{")


def without_test_modules(text: str) -> str:
    """The text minus the bodies of inline `#[cfg(test)] mod x { ... }` (braces counted,
    skipping string and char literals and comments)."""
    while m := TEST_MODULE.search(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            if skip := LITERAL.match(text, i):
                i = skip.end()
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]
    return text


# Comments, raw strings, strings and char literals (not lifetimes), so their braces do not count.
LITERAL = re.compile(
    r"//[^\n]*|/\*.*?\*/|b?r(#*)\".*?\"\1|b?\"(?:\\.|[^\"\\])*\"|b?'(?:\\.[^']*|[^'\\])'",
    re.S,
)


def edges(src: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.rs")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        if parts in (["lib"], ["main"]):
            continue
        top = parts[0]
        text = without_test_modules(path.read_text())
        named = set(re.findall(r"crate::(\w+)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text):
            named |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
        graph.setdefault(top, set()).update(named - {top, "self"})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    bad = False
    show = "--edges" in sys.argv
    for arg in (a for a in sys.argv[1:] if a != "--edges"):
        graph = edges(Path(arg))
        if show:
            print(f"{arg}:")
            for a in sorted(graph):
                if graph[a]:
                    print(f"  {a} -> {', '.join(sorted(graph[a]))}")
        if found := cycles(graph):
            print(
                f"error: import cycles between modules of {arg}: {found}",
                file=sys.stderr,
            )
            print(
                "hint: move the shared type into a module of its own", file=sys.stderr
            )
            bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
