"""Database watchdog: give up, loudly, when the database stays unreachable.

Transactions retry on their own after a lost connection, and workers retry
their calls; but a server that cannot reach its database for longer than
`db_unavailable_exit_seconds` exits non-zero with a clear message rather
than hang (a supervisor restarts it, an operator sees why).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from weir.errors import Unavailable
from weir.server.clock import Clock
from weir.server.services.base import Service
from weir.server.store.db import Database

log = logging.getLogger("weir.server")


class DatabaseUnreachable(Unavailable):
    pass


class DatabaseWatchdog(Service):
    name = "db-watchdog"

    def __init__(self, db: Database, clock: Clock, *, limit: float, fatal: asyncio.Future[None]) -> None:
        super().__init__(clock, interval=min(1.0, limit / 4))
        self.db = db
        self.limit = limit
        self.fatal = fatal

    async def tick(self, now: datetime) -> int:
        since = self.db.unavailable_since
        if since is None:
            return 0
        try:
            await asyncio.to_thread(self.db.ping)
            log.info("database reachable again")
            return 0
        except Exception as exc:
            down = time.monotonic() - since
            if down < self.limit:
                log.warning("database unreachable for %.0fs: %s", down, exc)
                return 0
            if not self.fatal.done():
                self.fatal.set_exception(
                    DatabaseUnreachable(
                        f"the database has been unreachable for {down:.0f}s "
                        f"(limit WEIR_DB_UNAVAILABLE_EXIT_SECONDS={self.limit:g}): {exc}"
                    )
                )
            return 1
