"""Leases: a worker holds each running attempt for a bounded time.

Heartbeats renew every lease a worker holds in one call and tell it, per
attempt, whether to carry on. An attempt that is no longer current (it was
retried elsewhere, or its run ended) is told to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from weir.models import Directive, LeaseStatus
from weir.server.store import task_instances as tis
from weir.server.store import workers
from weir.states import TaskState


def heartbeat(
    conn: Connection, now: datetime, *, worker_id: str, running: Sequence[tuple[int, int]], lease: timedelta
) -> list[LeaseStatus]:
    workers.touch(conn, now, worker_id)
    renewed = tis.renew_leases(conn, now, running, lease)
    return [
        LeaseStatus(
            task_instance_id=i,
            attempt=a,
            directive=_directive(r),
            lease_expires_at=r.expires_at,
        )
        for (i, a), r in renewed.items()
    ]


def _directive(r: tis.Renewal) -> Directive:
    if r.expires_at is not None:
        return Directive.CONTINUE
    if r.state is TaskState.REMOVED:
        return Directive.STOP_CANCELLED
    return Directive.STOP_LEASE_LOST
