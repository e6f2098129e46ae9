"""Other load on the machine: CPU used by processes that are not the benchmark's.

Figures taken while something else keeps the 2 cores busy are not Weir's.
Before each run the harness waits for a quiet machine, and during each run it
measures the CPU of everything else: all busy time (/proc/stat) minus this
process and its children (reaped children included) minus the Postgres
processes serving the benchmark's databases or the whole cluster
(background writers, reaped backends).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import CLOCK_TICKS, descendants

BENCH_DB_PREFIX = "weir_bench_"
_BACKEND = re.compile(r"\(\d+\)|\[local\]")


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _times(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
    return own, children


def own_cpu() -> float:
    """This process, its reaped children and its live descendants."""
    me = os.getpid()
    total = sum(_times(me))
    for pid in descendants(me):
        try:
            total += _times(pid)[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _postgres_is_ours(cmdline: str) -> bool:
    # Backends show "postgres: 15/main: user database 127.0.0.1(port) state";
    # background processes ("checkpointer", "walwriter", ...) serve everyone.
    if _BACKEND.search(cmdline):
        return BENCH_DB_PREFIX in cmdline
    return True


def postgres_cpu() -> float:
    """Postgres processes working for the benchmark, and backends already reaped by the postmaster."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm != "postgres":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            own, reaped = _times(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        if not cmdline.startswith("postgres:"):  # the postmaster itself
            total += own + reaped
        elif _postgres_is_ours(cmdline):
            total += own
    return total


@dataclass(frozen=True)
class Snapshot:
    wall: float
    busy: float
    own: float
    postgres: float

    @classmethod
    def take(cls) -> Snapshot:
        return cls(time.monotonic(), machine_busy(), own_cpu(), postgres_cpu())

    def foreign_cores(self, later: Snapshot) -> float:
        """Cores used by other processes between the two snapshots."""
        other = (later.busy - self.busy) - (later.own - self.own) - (later.postgres - self.postgres)
        return max(0.0, other) / max(1e-9, later.wall - self.wall)


def wait_quiet(
    log: Callable[[str], None], *, limit: float = 0.25, patience: float = 600.0, window: float = 2.0
) -> float:
    """Wait up to `patience` s until other processes use < `limit` cores; returns the last figure."""
    deadline = time.monotonic() + patience
    warned = False
    while True:
        before = Snapshot.take()
        time.sleep(window)
        foreign = before.foreign_cores(Snapshot.take())
        if foreign < limit or time.monotonic() > deadline:
            if warned:
                log(f"    other load now {foreign:.2f} cores; going on")
            return foreign
        if not warned:
            log(f"    the machine is busy ({foreign:.2f} cores used by other processes); waiting")
            warned = True
