"""Claims: lease queued tasks to a worker and hand them out ready to run.

The claim itself is one statement (store.task_instances.claim). Turning the
claimed rows into assignments needs each run's params and the results the
tasks' arguments refer to: run facts come from the catalog cache, results
from one extra read, only when an argument uses an upstream result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from weir import _template
from weir.models import Assignment, PythonInvocation
from weir.server.catalog import Catalog
from weir.server.store import task_instances as tis
from weir.spec import BashCommand, PythonCall


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A worker asking for up to `slots` tasks from `queues`."""

    worker_id: str
    queues: Sequence[str]
    slots: int


@dataclass(frozen=True, slots=True)
class Taken:
    assignments: list[Assignment] = field(default_factory=list)
    #: How many were taken from each queue.
    per_queue: Counter[str] = field(default_factory=Counter)


def claim(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    *,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease: timedelta,
) -> list[Assignment]:
    return take(conn, now, catalog, ClaimRequest(worker_id, queues, limit), lease).assignments


def take(conn: Connection, now: datetime, catalog: Catalog, request: ClaimRequest, lease: timedelta) -> Taken:
    """Claim what `request` asks for and turn the rows into assignments."""
    claimed = tis.claim(
        conn, now, worker_id=request.worker_id, queues=request.queues, limit=request.slots, lease=lease
    )
    return assign(conn, catalog, claimed)


def assign(conn: Connection, catalog: Catalog, claimed: Sequence[tis.Claimed]) -> Taken:
    """Turn claimed rows into assignments: the task's call, its run's facts, upstream results."""
    if not claimed:
        return Taken()
    runs = catalog.runs(conn, {c.run_pk for c in claimed})
    catalog.handed_out((c.id, c.run_pk, c.task_id) for c in claimed)
    wanted: set[tuple[int, str]] = set()
    for c in claimed:
        dag = catalog.dag(conn, runs[c.run_pk].version_id)
        wanted.update((c.run_pk, ref) for ref in dag.refs[c.task_id])
    results = tis.results(conn, wanted)

    out: list[Assignment] = []
    for c in claimed:
        run = runs[c.run_pk]
        dag = catalog.dag(conn, run.version_id)
        task = dag.tasks[c.task_id]
        body: PythonInvocation | BashCommand
        if isinstance(task.body, PythonCall):
            upstream = {ref: results.get((c.run_pk, ref)) for ref in dag.refs[c.task_id]}
            args, kwargs = _template.resolve(task.body.arguments, upstream, run.params)
            body = PythonInvocation(args=args, kwargs=kwargs)
        else:
            body = task.body
        out.append(
            Assignment(
                task_instance_id=c.id,
                attempt=c.attempt,
                dag_id=c.dag_id,
                task_id=c.task_id,
                map_index=c.map_index,
                run_id=run.run_id,
                dag_version=dag.version.hash,
                try_number=c.try_number,
                max_tries=c.max_tries,
                lease_expires_at=c.lease_expires_at,
                logical_date=run.logical_date,
                timeout=task.timeout,
                params=run.params,
                body=body,
            )
        )
    return Taken(out, Counter(c.queue for c in claimed))
