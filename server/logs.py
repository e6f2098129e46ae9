"""Appending captured output to running attempts (fenced like every report)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from weir.models import AckStatus, LogChunk
from weir.server.store import task_instances as tis
from weir.server.store import task_logs
from weir.states import TaskState


def append(conn: Connection, now: datetime, chunks: Sequence[LogChunk]) -> list[AckStatus]:
    """Store chunks of current attempts; chunks of stale attempts are refused."""
    current = tis.current(conn, [c.task_instance_id for c in chunks])
    statuses = []
    accepted = []
    for chunk in chunks:
        c = current.get(chunk.task_instance_id)
        if c is not None and c.attempt == chunk.attempt and c.state is TaskState.RUNNING:
            statuses.append(AckStatus.ACCEPTED)
            accepted.append((chunk.task_instance_id, chunk.attempt, chunk.data))
        else:
            statuses.append(AckStatus.STALE)
    task_logs.append(conn, now, accepted)
    return statuses
