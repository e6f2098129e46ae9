"""Captured task output, stored in chunks per attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from weir.server.store.schema import task_logs

# A page of logs stops after this many bytes; the cursor continues it.
PAGE_BYTES = 1024 * 1024


def append(conn: Connection, now: datetime, chunks: Sequence[tuple[int, int, bytes]]) -> None:
    """Store (ti_id, attempt, data) chunks; the caller checked the attempts are current."""
    rows = [{"ti_id": i, "attempt": a, "data": d, "created_at": now} for i, a, d in chunks if d]
    if rows:
        conn.execute(insert(task_logs), rows)


def read(conn: Connection, ti_id: int, attempts: Sequence[int], after: int) -> tuple[bytes, int]:
    """Log data of the given attempts after cursor `after`; returns (data, new cursor)."""
    if not attempts:
        return b"", after
    rows = conn.execute(
        select(task_logs.c.id, task_logs.c.data)
        .where(task_logs.c.ti_id == ti_id, task_logs.c.attempt.in_(list(attempts)), task_logs.c.id > after)
        .order_by(task_logs.c.id)
        .limit(1000)
    )
    parts: list[bytes] = []
    size = 0
    cursor = after
    for row in rows:
        parts.append(bytes(row.data))
        size += len(row.data)
        cursor = row.id
        if size >= PAGE_BYTES:
            break
    return b"".join(parts), cursor
