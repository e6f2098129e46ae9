"""Keeps the database clock offset fresh (Postgres)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from weir.server.clock import DatabaseClock
from weir.server.services.base import Service


class ClockSync(Service):
    name = "clock-sync"

    def __init__(self, clock: DatabaseClock, interval: float = 30.0) -> None:
        super().__init__(clock, interval)
        self.db_clock = clock

    async def tick(self, now: datetime) -> int:
        await asyncio.to_thread(self.db_clock.sync)
        return 1
