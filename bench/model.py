"""What a benchmark is made of: workloads, their cases, the figures they report.

A workload (W1 ... W7) has cases ("chain of 50", "1,000 tasks, 4 workers").
Each run of a case returns one value per metric; a case runs `runs` times
on fresh processes and a fresh database, and the report quotes the median
with the min-max of those runs, never a single run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bench.harness import Harness


@dataclass(frozen=True)
class Target:
    """An acceptance target from the issue, e.g. `<= 3 ms`."""

    op: Literal["<=", "<", ">=", ">"]
    value: float

    def met(self, x: float) -> bool:
        return {
            "<=": x <= self.value,
            "<": x < self.value,
            ">=": x >= self.value,
            ">": x > self.value,
        }[self.op]

    def __str__(self) -> str:
        op = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        return f"{op} {self.value:,g}"


@dataclass(frozen=True)
class Metric:
    """One figure a case reports, with its target and the Airflow reference if any."""

    key: str
    label: str
    unit: str
    target: Target | None = None
    #: Apache Airflow 3.3.2 LocalExecutor on a machine like ours, same unit.
    airflow: float | None = None
    airflow_note: str = ""
    higher_is_better: bool = False

    def vs_airflow(self, value: float) -> float | None:
        """How many times better than Airflow (> 1 means Weir is better)."""
        if self.airflow is None or value <= 0 or not math.isfinite(value):
            return None
        return value / self.airflow if self.higher_is_better else self.airflow / value


@dataclass(frozen=True)
class Env:
    """What every case needs to know about this invocation."""

    backend: Literal["postgres", "sqlite"]
    pg_admin: str
    smoke: bool
    workdir: Path
    repo: Path
    #: Slots per worker (`weir worker --concurrency`).
    concurrency: int
    #: Progress lines go here.
    log: Callable[[str], None] = print


Values = dict[str, float]


@dataclass(frozen=True)
class Case:
    name: str
    metrics: tuple[Metric, ...]
    measure: Callable[[Harness], Values]
    #: Short description of the setup (workers, slots, sizes), for the report.
    setup: str = ""


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    #: How it is measured, a paragraph for the report.
    method: str
    #: The cases to run, given whether this is the smoke size.
    cases: Callable[[bool], list[Case]]
    #: Lines the report adds after the tables (figures derived across cases).
    conclude: Callable[[list[CaseResult]], list[str]] | None = None


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} ({fmt(self.low)} to {fmt(self.high)})"


@dataclass
class CaseResult:
    workload: Workload
    case: Case
    samples: list[Values] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: CPU cores used by processes outside the benchmark during each run.
    foreign: list[float] = field(default_factory=list)
    #: The commit checked out when each run started (the code may change between runs).
    commits: list[str] = field(default_factory=list)

    def summary(self, key: str) -> Summary | None:
        values = [s[key] for s in self.samples if key in s and math.isfinite(s[key])]
        if not values:
            return None
        return Summary(statistics.median(values), min(values), max(values), len(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def fmt(x: float) -> str:
    """Three significant figures, thousands separated; what every table shows."""
    if not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
