"""Engines, transactions, and the thread that runs them.

The gRPC services run on asyncio; SQL runs in a small pool of threads so the
event loop never blocks on the database. Each call is one whole transaction
(`Database.write` / `Database.read`), so a store function can never forget
to commit or leave a transaction open across an `await`.

SQLite gets exactly one thread and `BEGIN IMMEDIATE` for writes: a single
writer, in WAL mode so readers in other processes are never blocked.
Postgres gets `db_pool_size` threads and connections.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

P = ParamSpec("P")
T = TypeVar("T")

_WRITE = "weir_write"  # also the execution option that makes SQLite BEGIN IMMEDIATE
_READ = "read"
_SINGLE = "single"  # autocommit: a single-statement write
APPLICATION_NAME = "weir-server"
TRANSIENT_RETRIES = 3
log = logging.getLogger("weir.server.db")


def is_transient(exc: DBAPIError) -> bool:
    """Lost connections, restarts, deadlock victims, a locked SQLite file."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def is_conflict(exc: DBAPIError) -> bool:
    """A transaction lost to another (deadlock victim, serialization failure, a busy SQLite
    file): the database is reachable, only this try failed."""
    if getattr(exc.orig, "sqlstate", None) in ("40P01", "40001"):
        return True
    return "database is locked" in str(exc.orig)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs (psycopg2 is not a dependency)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 6) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    # Named connections: operators (and the fault tests) can tell the server's sessions apart.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        pool_recycle=3600,
        # The most recently used connection first: under light load the same few
        # connections serve every transaction, with their statements prepared.
        pool_use_lifo=True,
        connect_args={"application_name": APPLICATION_NAME},
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start
        # (pysqlite's own transaction handling is not usable here).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock up front, so it never fails half-way
        # through upgrading a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


class Database:
    """Runs store functions in transactions on dedicated threads."""

    def __init__(self, url: str, *, pool_size: int = 6) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        threads = 1 if self.is_sqlite else pool_size
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="weir-db")
        #: monotonic time of the first failure of the current outage, None when healthy
        self.unavailable_since: float | None = None
        #: transactions run again, by the error that ended the first try (DeadlockDetected, ...)
        self.retried: Counter[str] = Counter()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    # -- synchronous (CLI, tests, migrations) ----------------------------------
    def write_sync(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._transaction(_WRITE, fn, *args, **kwargs)

    def read_sync(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._transaction(_READ, fn, *args, **kwargs)

    def single_sync(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn`, whose one write is a single statement, without BEGIN and COMMIT.

        On Postgres each statement commits by itself (autocommit), which saves
        two round trips; `fn` may read after its write, but must not depend on
        seeing the database unchanged between statements. SQLite: a write.
        """
        return self._transaction(_WRITE if self.is_sqlite else _SINGLE, fn, *args, **kwargs)

    def _transaction(self, mode: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn in a transaction, again on a fresh connection if the first one died.

        A killed connection (pg_terminate_backend, a Postgres restart, a
        deadlock victim) rolls the transaction back, so running it again is
        safe; every transition is guarded by state, so even a commit that
        succeeded before the connection broke is not applied twice.
        """
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                conn = self.engine.connect()
                if mode == _SINGLE:
                    with conn:
                        result = fn(conn.execution_options(isolation_level="AUTOCOMMIT"), *args, **kwargs)
                    self.unavailable_since = None
                    return result
                if mode == _WRITE:
                    conn = conn.execution_options(**{_WRITE: True})
                with conn, conn.begin():
                    result = fn(conn, *args, **kwargs)
                self.unavailable_since = None
                return result
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if self.unavailable_since is None and not is_conflict(exc):
                    self.unavailable_since = time.monotonic()
                if attempt == TRANSIENT_RETRIES:
                    raise
                self.retried[type(exc.orig).__name__] += 1
                log.info("retrying a transaction after %s", type(exc.orig).__name__)
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # -- from the event loop -------------------------------------------------------
    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn(conn, ...)` in one write transaction, off the event loop."""
        return await self._submit(self.write_sync, fn, *args, **kwargs)

    async def single(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`single_sync` off the event loop."""
        return await self._submit(self.single_sync, fn, *args, **kwargs)

    async def read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one read-only transaction, off the event loop."""
        return await self._submit(self.read_sync, fn, *args, **kwargs)

    async def _submit(self, runner: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, lambda: ctx.run(runner, *args, **kwargs))

    def ping(self) -> None:
        """Raise unless the database answers now."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        self.unavailable_since = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
