"""CPU time of a server: its process and every descendant, from /proc.

Method. For each process in the tree rooted at the server's pid we read
``/proc/<pid>/stat`` fields 14-17: ``utime`` and ``stime`` (all threads of
that process) and ``cutime``/``cstime`` (CPU of children it has already
reaped, including what they had reaped in turn). The tree's total is the sum
of all four over every live member; the CPU of a window is the total at its
end minus the total at its start.

This stays exact when a worker exits inside the window and its parent (a
tree member) reaps it: its time moves from its own fields into the parent's
``cutime``/``cstime`` and is still counted once (an exited child not yet
reaped is a zombie that still shows its own times). Lost: a descendant reaped
by a process outside the tree, e.g. re-parented to init after its parent
died. A snapshot reads /proc one process at a time, so a reap that lands
between reading a child and reading its parent counts that child twice (rare
for a server in steady state). Granularity is one clock tick (usually 10 ms)
per process per read, well under 1% of a multi-second window at any useful load.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    name: str
    ticks: int
    """utime + stime + cutime + cstime."""


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when the process has gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); field n lives at fields[n - 3].
    ppid = int(fields[4 - 3])
    utime, stime, cutime, cstime = (int(fields[n - 3]) for n in (14, 15, 16, 17))
    return ProcStat(pid, ppid, name, utime + stime + cutime + cstime)


def all_stats() -> list[ProcStat]:
    stats = (read_stat(int(entry.name)) for entry in PROC.iterdir() if entry.name.isdigit())
    return [s for s in stats if s is not None]


def tree(root: int) -> list[ProcStat]:
    """The root process and all its live descendants."""
    stats = all_stats()
    children: dict[int, list[ProcStat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    found = [s for s in stats if s.pid == root]
    queue = list(found)
    while queue:
        for child in children.get(queue.pop().pid, []):
            found.append(child)
            queue.append(child)
    return found


@dataclass(frozen=True)
class Snapshot:
    stats: list[ProcStat]

    @property
    def seconds(self) -> float:
        return sum(s.ticks for s in self.stats) / CLOCK_TICKS


def snapshot(root: int) -> Snapshot:
    return Snapshot(tree(root))


@dataclass(frozen=True)
class Window:
    cpu_s: float
    """CPU of the whole tree between the two snapshots."""
    by_process: list[dict[str, object]]
    """Per live process at the end (pid, name, cpu_s): shows how the load was split,
    e.g. front end vs workers, or one uvicorn worker doing all the work."""


def window(before: Snapshot, after: Snapshot) -> Window:
    start = {s.pid: s.ticks for s in before.stats}
    by_process = [
        {"pid": s.pid, "name": s.name, "cpu_s": round((s.ticks - start.get(s.pid, 0)) / CLOCK_TICKS, 3)}
        for s in after.stats
    ]
    return Window(after.seconds - before.seconds, by_process)


def own_children_cpu_seconds() -> float:
    """CPU of this process's reaped children (the load generators), for deltas."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
