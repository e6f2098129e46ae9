"""Workers the server has seen."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Connection

from weir.server.store._dialect import insert_ignoring_conflict
from weir.server.store.schema import workers


def upsert(
    conn: Connection,
    now: datetime,
    *,
    worker_id: str,
    hostname: str,
    pid: int,
    queues: Sequence[str],
    concurrency: int,
    version: str,
) -> None:
    values = {
        "hostname": hostname,
        "pid": pid,
        "queues": json.dumps(list(queues)),
        "concurrency": concurrency,
        "version": version,
        "registered_at": now,
        "last_seen_at": now,
    }
    inserted = conn.execute(
        insert_ignoring_conflict(conn, workers, ["worker_id"]).values(worker_id=worker_id, **values)
    )
    if inserted.rowcount == 0:
        conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(**values))


def touch(conn: Connection, now: datetime, worker_id: str) -> bool:
    """Record that the worker is alive; False when it never registered."""
    result = conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(last_seen_at=now))
    return result.rowcount > 0
