"""Time as the database sees it.

Leases and retry times are compared across replicas and hosts, so they are
computed on the database's clock, not on any one machine's. `DatabaseClock`
measures the offset between this host and Postgres now and then, so reading
the time costs no round trip. Store functions take `now` explicitly; tests
pass a `ManualClock`.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """This host's clock (SQLite: the database lives on this host)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class DatabaseClock:
    """This host's clock corrected by its measured offset from Postgres."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def sync(self) -> timedelta:
        """Measure the offset now; the round trip's midpoint is taken as the server's instant."""
        with self._engine.connect() as conn:
            before = time.time()
            db_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            after = time.time()
        local = datetime.fromtimestamp((before + after) / 2, UTC)
        with self._lock:
            self._offset = db_now - local
        return self._offset

    def now(self) -> datetime:
        # Never touches the database: services.clock_sync calls sync() off the event loop.
        return datetime.now(UTC) + self._offset


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now
