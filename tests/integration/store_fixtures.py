"""A small harness over the control plane's transactions, with a manual clock."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from weir.models import Assignment, Outcome, OutcomeAck, TaskError, TaskOutcome
from weir.server import claims, completion, runs
from weir.server.catalog import Catalog
from weir.server.clock import ManualClock
from weir.server.store import dags
from weir.server.store.db import Database
from weir.spec import DagSpec

LEASE = timedelta(seconds=30)


@dataclass
class Plane:
    """Drive the store as the gRPC services would, one transaction per call."""

    db: Database
    clock: ManualClock = field(default_factory=ManualClock)
    catalog: Catalog = field(default_factory=Catalog)

    def register(self, spec: DagSpec) -> None:
        self.db.write_sync(dags.register, self.clock.now(), spec)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, **kw: Any) -> runs.Triggered:
        return self.db.write_sync(
            runs.trigger, self.clock.now(), self.catalog, dag_id=dag_id, conf=conf or {}, **kw
        )

    def claim(
        self, n: int = 100, queues: tuple[str, ...] = ("default",), worker: str = "w1"
    ) -> list[Assignment]:
        return self.db.write_sync(
            claims.claim,
            self.clock.now(),
            self.catalog,
            worker_id=worker,
            queues=queues,
            limit=n,
            lease=LEASE,
        )

    def complete(self, *outcomes: TaskOutcome, max_result_bytes: int = 1 << 20) -> completion.Completion:
        return self.db.write_sync(
            completion.complete,
            self.clock.now(),
            self.catalog,
            list(outcomes),
            max_result_bytes=max_result_bytes,
        )

    def report(
        self, *reports: completion.Report, committed: completion.HopCommitted | None = None
    ) -> completion.ReportsApplied:
        return self.db.write_sync(
            completion.report,
            self.clock.now(),
            self.catalog,
            list(reports),
            max_result_bytes=1 << 20,
            lease=LEASE,
            committed=committed,
        )

    def report_alone(
        self, report: completion.Report
    ) -> completion.ReportsApplied | completion.HopCommitted | None:
        """As the server tries a lone report first: without a transaction (autocommit)."""
        return self.db.single_sync(
            completion.report_alone,
            self.clock.now(),
            self.catalog,
            report,
            max_result_bytes=1 << 20,
            lease=LEASE,
        )

    def acks(self, *outcomes: TaskOutcome) -> list[OutcomeAck]:
        return self.complete(*outcomes).acks


def complete_from_replicas(
    plane: Plane, db_url: str, replicas: Sequence[Sequence[Sequence[TaskOutcome]]]
) -> Counter[str]:
    """Report side by side as server replicas would: each replica, on its own connection
    and thread, completes its batches in order. Raises the first error; returns the
    transactions that had to be run again, by error (DeadlockDetected, ...)."""
    errors: list[BaseException] = []
    retried: Counter[str] = Counter()

    def replica(batches: Sequence[Sequence[TaskOutcome]]) -> None:
        db = Database(db_url, pool_size=1)
        mine = Plane(db, clock=plane.clock, catalog=plane.catalog)
        try:
            for batch in batches:
                mine.complete(*batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            retried.update(db.retried)
            db.close()

    threads = [threading.Thread(target=replica, args=(batches,)) for batches in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return retried


def ok(a: Assignment, result: bytes = b"null") -> TaskOutcome:
    return TaskOutcome(a.task_instance_id, a.attempt, Outcome.SUCCESS, result_json=result)


def failed(a: Assignment, message: str = "boom") -> TaskOutcome:
    return TaskOutcome(a.task_instance_id, a.attempt, Outcome.FAILED, error=TaskError("ValueError", message))


@pytest.fixture
def plane(db_url: str) -> Iterator[Plane]:
    db = Database(db_url, pool_size=4)
    try:
        yield Plane(db)
    finally:
        db.close()
