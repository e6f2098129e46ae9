"""Fresh metadata databases for each measurement, and reading what they recorded.

Postgres: one migrated template per invocation (`weir db upgrade`), cloned
with CREATE DATABASE ... TEMPLATE for every measurement and dropped WITH
(FORCE) afterwards. SQLite: the migrated template file is copied.

Timestamps are read from the database: the server writes queued_at,
started_at and ended_at with its database-synchronised clock, so every
latency here is measured on one clock.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url

from bench.model import Env
from weir.server.store.schema import dag_runs, task_instances

ti, dr = task_instances, dag_runs


@dataclass(frozen=True, slots=True)
class TaskTimes:
    run_id: str
    task_id: str
    state: str
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunTimes:
    run_id: str
    state: str
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


def seconds(later: datetime | None, earlier: datetime | None) -> float:
    if later is None or earlier is None:
        return float("nan")
    return (later - earlier).total_seconds()


def pg_connect(url: str, dbname: str | None = None) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        dbname=dbname or u.database or "postgres",
        autocommit=True,
    )


def _with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+psycopg", database=name)
        .render_as_string(hide_password=False)
    )


class BenchDb:
    """One fresh database: its URL for `weir server --db`, and reads for the harness."""

    def __init__(self, env: Env, url: str, name: str) -> None:
        self.env = env
        self.url = url
        self.name = name
        self._engine: Engine | None = None

    @property
    def is_postgres(self) -> bool:
        return self.env.backend == "postgres"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url, pool_size=1, max_overflow=0)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- what the server recorded ----------------------------------------------
    def tasks(self, *, run_ids: Sequence[str] | None = None, dag_id: str | None = None) -> list[TaskTimes]:
        stmt = select(dr.c.run_id, ti.c.task_id, ti.c.state, ti.c.queued_at, ti.c.started_at, ti.c.ended_at)
        stmt = stmt.select_from(ti.join(dr, dr.c.id == ti.c.run_pk))
        if run_ids is not None:
            stmt = stmt.where(dr.c.run_id.in_(list(run_ids)))
        if dag_id is not None:
            stmt = stmt.where(dr.c.dag_id == dag_id)
        with self.engine.connect() as conn:
            return [TaskTimes(*r) for r in conn.execute(stmt.order_by(ti.c.id))]

    def results(self, run_id: str) -> dict[str, Any]:
        """task_id -> the JSON value each task of the run returned."""
        stmt = select(ti.c.task_id, ti.c.result).select_from(ti.join(dr, dr.c.id == ti.c.run_pk))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.where(dr.c.run_id == run_id))
            return {task_id: json.loads(result) for task_id, result in rows if result is not None}

    def runs(self, *, run_ids: Sequence[str] | None = None, dag_id: str | None = None) -> list[RunTimes]:
        stmt = select(dr.c.run_id, dr.c.state, dr.c.queued_at, dr.c.started_at, dr.c.ended_at)
        if run_ids is not None:
            stmt = stmt.where(dr.c.run_id.in_(list(run_ids)))
        if dag_id is not None:
            stmt = stmt.where(dr.c.dag_id == dag_id)
        with self.engine.connect() as conn:
            return [RunTimes(*r) for r in conn.execute(stmt.order_by(dr.c.id))]

    def count_finished_runs(self, dag_id: str) -> int:
        stmt = (
            select(func.count())
            .select_from(dr)
            .where(dr.c.dag_id == dag_id, dr.c.state.in_(["success", "failed"]))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # -- Postgres statistics -------------------------------------------------------
    def transactions(self) -> int:
        """Committed + rolled-back transactions of this database so far (pg_stat_database).

        Read from another database, so reading it does not count itself.
        """
        if not self.is_postgres:
            return 0
        with pg_connect(self.env.pg_admin) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def next_xid(self) -> int:
        """The next transaction id Postgres will assign, cluster-wide (0 on SQLite).

        Only transactions that write get one, at once: the difference over a
        quiet cluster counts write transactions exactly, without the delay of
        the statistics collector.
        """
        if not self.is_postgres:
            return 0
        with pg_connect(self.env.pg_admin) as conn:
            row = conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())").fetchone()
        return int(row[0]) if row else 0

    def backend_pids(self) -> list[int]:
        """Server processes of Postgres serving this database (to charge their CPU)."""
        if not self.is_postgres:
            return []
        with pg_connect(self.env.pg_admin) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,))
            return [int(r[0]) for r in rows]

    def execute(self, *statements: str) -> None:
        """Run SQL as the database owner (bulk loads)."""
        if self.is_postgres:
            with pg_connect(self.env.pg_admin, self.name) as conn:
                for sql in statements:
                    conn.execute(sql)
        else:
            import sqlite3

            path = make_url(self.url).database
            assert path is not None
            with contextlib.closing(sqlite3.connect(path)) as conn:
                for sql in statements:
                    conn.executescript(sql)
                conn.commit()


class Databases:
    """Creates the migrated template once, then hands out fresh copies of it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._template: str | None = None

    def _weir(self) -> str:
        return str(self.env.repo / ".venv" / "bin" / "weir")

    def _upgrade(self, url: str) -> None:
        done = subprocess.run(
            [self._weir(), "db", "upgrade", "--db", url],
            capture_output=True,
            text=True,
            cwd=self.env.workdir,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"weir db upgrade failed:\n{done.stdout}{done.stderr}")

    def _admin(self, *statements: str) -> None:
        with pg_connect(self.env.pg_admin) as conn:
            for sql in statements:
                conn.execute(sql)

    def template(self) -> str:
        if self._template is None:
            if self.env.backend == "postgres":
                name = f"weir_bench_tpl_{uuid.uuid4().hex[:8]}"
                self._admin(f'CREATE DATABASE "{name}"')
                self._template = name
                self._upgrade(_with_database(self.env.pg_admin, name))
            else:
                path = self.env.workdir / "template.db"
                self._template = str(path)
                self._upgrade(f"sqlite:///{path}")
        return self._template

    @contextlib.contextmanager
    def fresh(self) -> Iterator[BenchDb]:
        template = self.template()
        name = f"weir_bench_{uuid.uuid4().hex[:10]}"
        if self.env.backend == "postgres":
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            db = BenchDb(self.env, _with_database(self.env.pg_admin, name), name)
        else:
            path = self.env.workdir / f"{name}.db"
            shutil.copyfile(template, path)
            db = BenchDb(self.env, f"sqlite:///{path}", name)
        try:
            # The template may be behind the code: another revision can land while
            # the benchmark runs. On a current schema this is a no-op.
            self._upgrade(db.url)
            yield db
        finally:
            db.dispose()
            if self.env.backend == "postgres":
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._template is not None and self.env.backend == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
        self._template = None
