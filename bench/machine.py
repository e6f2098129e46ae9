"""Facts about where and on what the figures were taken."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.database import pg_connect
from bench.model import Env

PG_SETTINGS = (
    "synchronous_commit",
    "fsync",
    "shared_buffers",
    "wal_level",
    "max_connections",
    "work_mem",
)


def cpu_probe_ms(repeats: int = 5) -> float:
    """Median time of a fixed pure-Python loop (3 million additions), in ms.

    The machine's speed varies by the hour (a shared host: the same commit has
    measured 1.8 times the CPU time per task an hour apart); this figure, taken
    at the start and end of a run, places a run's figures on that scale.
    """
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class Machine:
    date: str
    cpu: str
    cores: int
    ram_gib: float
    kernel: str
    python: str
    commit: str
    postgres: str
    pg_settings: dict[str, str]
    #: cpu_probe_ms at the start of the run, and at its end (set when it ends)
    probe_ms: tuple[float, float | None] = (0.0, None)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def commit(repo: Path) -> str:
    sha = _git(repo, "rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return f"{sha} (with uncommitted changes)" if dirty else sha


def describe(env: Env) -> Machine:
    postgres, settings = "not used (SQLite)", {}
    if env.backend == "postgres":
        with pg_connect(env.pg_admin) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = f"PostgreSQL {row[0] if row else '?'}"
            for name in PG_SETTINGS:
                value = conn.execute(f"SHOW {name}").fetchone()
                settings[name] = str(value[0]) if value else "?"
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        ram_gib=_ram_gib(),
        kernel=platform.release(),
        python=platform.python_version(),
        commit=commit(env.repo),
        postgres=postgres,
        pg_settings=settings,
        probe_ms=(cpu_probe_ms(), None),
    )
