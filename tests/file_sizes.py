#!/usr/bin/env python3
"""Fails (exit 1, naming each file) when a source file outgrows the project's limit:
800 lines for the crates' and the worker package's sources, 1,000 for tests and benches
(STYLE.md: split a file long before it gets there). `make lint` runs it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS = [
    (800, ["protocol/src", "server/src", "server/cli/src", "worker/src", "worker/python"]),
    (1000, ["protocol/tests", "server/tests", "tests", "benches"]),
]
SUFFIXES = {".rs", ".py", ".sh"}


def main() -> int:
    over = []
    for limit, folders in LIMITS:
        for folder in folders:
            for path in sorted((ROOT / folder).rglob("*")):
                if path.suffix not in SUFFIXES or not path.is_file():
                    continue
                if any(part in {"target", ".venv", "__pycache__"} for part in path.parts):
                    continue
                lines = len(path.read_text(errors="replace").splitlines())
                if lines > limit:
                    over.append(f"{path.relative_to(ROOT)}: {lines} lines (limit {limit})")
    for line in over:
        print(f"error: {line}", file=sys.stderr)
    if over:
        print("hint: split the file by job (one job per file, STYLE.md)", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
