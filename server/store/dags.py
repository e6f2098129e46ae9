"""DAGs and their versions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Row

from weir.models import DagInfo, DagVersion
from weir.server.store._dialect import insert_ignoring_conflict
from weir.server.store.schema import dag_versions, dags
from weir.spec import DagSpec, Schedule


@dataclass(frozen=True, slots=True)
class Registered:
    dag_id: str
    version: DagVersion
    created: bool


@dataclass(frozen=True, slots=True)
class Prepared:
    """A spec with its canonical JSON and content hash, computed once."""

    spec: DagSpec
    text: str
    digest: str

    @classmethod
    def of(cls, spec: DagSpec) -> Prepared:
        text = spec.canonical_json()
        return cls(spec, text, hashlib.sha256(text.encode()).hexdigest())


def _version_of(conn: Connection, dag_id: str, digest: str) -> Row[Any, Any] | None:
    return conn.execute(
        select(dag_versions.c.id, dag_versions.c.created_at).where(
            dag_versions.c.dag_id == dag_id, dag_versions.c.version_hash == digest
        )
    ).first()


def register(conn: Connection, now: datetime, spec: DagSpec | Prepared) -> Registered:
    """Store `spec` as the DAG's latest version unless an equal version exists.

    Re-registering an older spec makes it the latest again without a new row.
    Every worker registers its DAGs when it starts, so the usual case (the
    version exists) sends no spec text to the database.
    """
    prepared = spec if isinstance(spec, Prepared) else Prepared.of(spec)
    spec, digest = prepared.spec, prepared.digest
    conn.execute(
        insert_ignoring_conflict(conn, dags, ["dag_id"]).values(
            dag_id=spec.dag_id, is_paused=False, created_at=now, updated_at=now
        )
    )
    created = False
    row = _version_of(conn, spec.dag_id, digest)
    if row is None:
        inserted = conn.execute(
            insert_ignoring_conflict(conn, dag_versions, ["dag_id", "version_hash"])
            .values(dag_id=spec.dag_id, version_hash=digest, spec=prepared.text, created_at=now)
            .returning(dag_versions.c.id, dag_versions.c.created_at)
        ).first()
        created = inserted is not None
        row = inserted if inserted is not None else _version_of(conn, spec.dag_id, digest)
    assert row is not None
    version_id, created_at = row.id, row.created_at
    conn.execute(
        update(dags)
        .where(dags.c.dag_id == spec.dag_id)
        .values(
            latest_version_id=version_id,
            description=spec.description,
            tags=json.dumps(list(spec.tags)),
            schedule=_schedule_json(spec.schedule),
            fileloc=spec.fileloc,
            task_count=len(spec.tasks),
            updated_at=now,
        )
    )
    return Registered(spec.dag_id, DagVersion(id=version_id, hash=digest, created_at=created_at), created)


def _schedule_json(s: Schedule | None) -> str | None:
    if s is None:
        return None
    return json.dumps(
        {
            "cron": s.cron,
            "every": None if s.every is None else s.every.total_seconds(),
            "timezone": s.timezone,
        }
    )


def _schedule(text: str | None) -> Schedule | None:
    if not text:
        return None
    from datetime import timedelta

    d = json.loads(text)
    return Schedule(
        cron=d.get("cron"),
        every=None if d.get("every") is None else timedelta(seconds=d["every"]),
        timezone=d.get("timezone") or "UTC",
    )


_INFO_COLUMNS = (
    dags.c.dag_id,
    dags.c.is_paused,
    dags.c.description,
    dags.c.tags,
    dags.c.schedule,
    dags.c.fileloc,
    dags.c.task_count,
    dag_versions.c.id.label("version_id"),
    dag_versions.c.version_hash,
    dag_versions.c.created_at.label("version_created_at"),
)


def _info(row: Any) -> DagInfo:
    m = row._mapping
    version = (
        None
        if m["version_id"] is None
        else DagVersion(id=m["version_id"], hash=m["version_hash"], created_at=m["version_created_at"])
    )
    return DagInfo(
        dag_id=m["dag_id"],
        is_paused=bool(m["is_paused"]),
        description=m["description"],
        tags=tuple(json.loads(m["tags"])),
        schedule=_schedule(m["schedule"]),
        latest_version=version,
        task_count=m["task_count"],
        fileloc=m["fileloc"],
    )


def _joined() -> object:
    return dags.outerjoin(dag_versions, dag_versions.c.id == dags.c.latest_version_id)


def list_all(conn: Connection, tags: list[str] | None = None) -> list[DagInfo]:
    rows = conn.execute(select(*_INFO_COLUMNS).select_from(_joined()).order_by(dags.c.dag_id))  # type: ignore[arg-type]
    infos = [_info(r) for r in rows]
    if tags:
        wanted = set(tags)
        infos = [i for i in infos if wanted <= set(i.tags)]
    return infos


def get(conn: Connection, dag_id: str) -> DagInfo | None:
    row = conn.execute(
        select(*_INFO_COLUMNS).select_from(_joined()).where(dags.c.dag_id == dag_id)  # type: ignore[arg-type]
    ).first()
    return None if row is None else _info(row)


@dataclass(frozen=True, slots=True)
class DagForRun:
    dag_id: str
    is_paused: bool
    version_id: int


_LOCK_FOR_RUNS = (
    select(dags.c.dag_id, dags.c.is_paused, dags.c.latest_version_id)
    .where(dags.c.dag_id == bindparam("dag_id"))
    .with_for_update(key_share=True)
)


def lock_for_runs(conn: Connection, dag_id: str) -> DagForRun | None:
    """Lock the DAG row: run starts of one DAG are serialised (max_active_runs).

    FOR NO KEY UPDATE, not FOR UPDATE: it must not wait for the KEY SHARE
    locks that foreign-key checks take on this row. A completion that
    updates a run row twice (count down, then finish) makes Postgres check
    the run's foreign key to this row on the second update; two such
    completions each held KEY SHARE and each waited for the other's, a
    deadlock on every few run ends with two report transactions at once.
    """
    row = conn.execute(_LOCK_FOR_RUNS, {"dag_id": dag_id}).first()
    if row is None or row.latest_version_id is None:
        return None
    return DagForRun(row.dag_id, bool(row.is_paused), row.latest_version_id)


def set_paused(conn: Connection, now: datetime, dag_id: str, paused: bool) -> bool:
    """Returns False when the DAG does not exist."""
    result = conn.execute(
        update(dags).where(dags.c.dag_id == dag_id).values(is_paused=paused, updated_at=now)
    )
    return result.rowcount > 0


def load_version(conn: Connection, version_id: int) -> tuple[DagVersion, DagSpec] | None:
    """The identity and spec of one version."""
    row = conn.execute(
        select(dag_versions.c.version_hash, dag_versions.c.created_at, dag_versions.c.spec).where(
            dag_versions.c.id == version_id
        )
    ).first()
    if row is None:
        return None
    version = DagVersion(id=version_id, hash=row.version_hash, created_at=row.created_at)
    return version, DagSpec.from_dict(json.loads(row.spec))
