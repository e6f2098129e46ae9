"""The metadata database: one MetaData, alembic's target.

Changing anything here needs an alembic revision in migrations/versions
(tests/integration/test_migrations.py fails when the two differ).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from weir.server.store.types import BigId, UTCDateTime

# Deterministic constraint names, so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

ID = String(250)
STATE = String(20)

dags = Table(
    "dags",
    metadata,
    Column("dag_id", ID, primary_key=True),
    Column("is_paused", Boolean, nullable=False, server_default=text("false")),
    # Denormalised from the latest version, so listings never parse specs.
    Column("latest_version_id", Integer, nullable=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("schedule", Text, nullable=True),
    Column("fileloc", Text, nullable=False, server_default=""),
    Column("task_count", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

dag_versions = Table(
    "dag_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", ID, ForeignKey("dags.dag_id", ondelete="CASCADE"), nullable=False),
    Column("version_hash", String(64), nullable=False),
    # DagSpec.canonical_json()
    Column("spec", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("dag_id", "version_hash"),
)

dag_runs = Table(
    "dag_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False, unique=True),
    Column("dag_id", ID, ForeignKey("dags.dag_id", ondelete="CASCADE"), nullable=False),
    Column("version_id", Integer, ForeignKey("dag_versions.id"), nullable=False),
    Column("state", STATE, nullable=False),
    Column("run_type", STATE, nullable=False),
    Column("logical_date", UTCDateTime, nullable=False),
    Column("data_interval_start", UTCDateTime, nullable=True),
    Column("data_interval_end", UTCDateTime, nullable=True),
    Column("conf", Text, nullable=False, server_default="{}"),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    # Task instances not yet finished. Completions count it down last in their
    # transaction (a short row lock instead of locking the run throughout);
    # the one that reaches 0 ends the run.
    Column("unfinished", Integer, nullable=False, server_default="0"),
    Index(None, "dag_id", "state"),
    Index(None, "state", "queued_at"),
)

task_instances = Table(
    "task_instances",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_pk", BigId, ForeignKey("dag_runs.id", ondelete="CASCADE"), nullable=False),
    Column("dag_id", ID, nullable=False),
    Column("task_id", ID, nullable=False),
    Column("map_index", Integer, nullable=False, server_default="-1"),
    Column("state", STATE, nullable=False),
    Column("queue", ID, nullable=False),
    Column("pool", ID, nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    # Fencing token: incremented by every claim; reports must carry it.
    Column("attempt", Integer, nullable=False, server_default="0"),
    # Tries that count against max_tries.
    Column("try_number", Integer, nullable=False, server_default="0"),
    Column("max_tries", Integer, nullable=False, server_default="1"),
    # Upstream tasks not yet finished; NULL when unknown (rows from before
    # revision 0004), which makes promotion look at every upstream state.
    Column("pending_upstream", Integer, nullable=True),
    # A queued task is claimable once available_at has passed (retry backoff).
    Column("available_at", UTCDateTime, nullable=True),
    Column("queued_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    # A task still waiting to start at this time fails (schedule_to_start_timeout).
    Column("start_deadline", UTCDateTime, nullable=True),
    Column("worker_id", ID, nullable=True),
    # JSON text of the return value; NULL until the task succeeds.
    Column("result", Text, nullable=True),
    # JSON text {"type", "message", "traceback"} of the last failure.
    Column("error", Text, nullable=True),
    UniqueConstraint("run_pk", "task_id", "map_index"),
    Index(None, "run_pk", "state"),
    Index(
        "ix_task_instances_start_deadline",
        "start_deadline",
        postgresql_where=text("start_deadline IS NOT NULL"),
        sqlite_where=text("start_deadline IS NOT NULL"),
    ),
    Index(
        "ix_task_instances_leased",
        "lease_expires_at",
        postgresql_where=text("state = 'running'"),
        sqlite_where=text("state = 'running'"),
    ),
)

# The claim reads only claimable rows in exactly this order (queue, then
# priority DESC, available_at, id): the index hands them out without a sort,
# and stays small however many finished rows pile up.
Index(
    "ix_task_instances_claim_order",
    task_instances.c.queue,
    task_instances.c.priority.desc(),
    task_instances.c.available_at,
    task_instances.c.id,
    postgresql_where=text("state IN ('queued', 'up_for_retry')"),
    sqlite_where=text("state IN ('queued', 'up_for_retry')"),
)

task_attempts = Table(
    "task_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ti_id", BigId, ForeignKey("task_instances.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("try_number", Integer, nullable=False),
    Column("worker_id", ID, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=False),
    # The state the attempt left the task in: success, failed, up_for_retry, ...
    Column("outcome", STATE, nullable=False),
    Column("error", Text, nullable=True),
    UniqueConstraint("ti_id", "attempt"),
)

task_logs = Table(
    "task_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ti_id", BigId, ForeignKey("task_instances.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "ti_id", "attempt", "id"),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", ID, primary_key=True),
    Column("hostname", String(255), nullable=False, server_default=""),
    Column("pid", Integer, nullable=False, server_default="0"),
    Column("queues", Text, nullable=False, server_default="[]"),
    Column("concurrency", Integer, nullable=False, server_default="0"),
    Column("version", String(50), nullable=False, server_default=""),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
)
