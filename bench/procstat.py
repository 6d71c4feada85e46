"""CPU time from Linux ``/proc``: a process tree's and the whole machine's, for the e2e bench.

Wall-clock throughput on a shared 2-core machine mixes the worker with its load generator and
the broker. CPU seconds per event do not: they say what one worker costs, so the bench also
reports events/s per worker core. Elsewhere than Linux the figures are absent (``None``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the fields after "pid (comm)"; comm may hold spaces


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (its own threads, not its children)."""
    f = _stat(pid)
    return None if f is None else (int(f[11]) + int(f[12])) / _TICK


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            f = _stat(int(d.name))
            if f is not None and int(f[1]) == pid:
                out.append(int(d.name))
    return out


def machine_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / _TICK, sum(ticks[:8]) / _TICK


@dataclass
class Snapshot:
    """CPU seconds of a worker (by pid: the worker process and its compute child) and the machine."""

    procs: dict[int, float]
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, root: int) -> Snapshot:
        pids = [root, *children(root)]
        procs = {p: s for p in pids if (s := process_seconds(p)) is not None}
        return cls(procs, machine_seconds())


def delta(a: Snapshot, b: Snapshot, root: int) -> dict[str, float | None]:
    """CPU seconds between two snapshots: the worker's main process, its children, the machine."""
    main = b.procs.get(root, 0.0) - a.procs.get(root, 0.0) if root in a.procs else None
    kids = sum(s - a.procs.get(p, 0.0) for p, s in b.procs.items() if p != root)
    out: dict[str, float | None] = {"worker_main_s": main, "worker_children_s": kids}
    if a.machine and b.machine:
        out["machine_busy_s"] = b.machine[0] - a.machine[0]
        out["machine_total_s"] = b.machine[1] - a.machine[1]
    return out
