"""Schedule-to-start timeouts: tasks left queued too long fail with that reason."""

from __future__ import annotations

from datetime import datetime

from weir.server import completion
from weir.server.plane import ControlPlane
from weir.server.services.base import Service

BATCH = 500


class StartTimeouts(Service):
    name = "start-timeouts"

    def __init__(self, plane: ControlPlane, interval: float) -> None:
        super().__init__(plane.clock, interval)
        self.plane = plane

    async def tick(self, now: datetime) -> int:
        return await self.plane.sweep(completion.time_out_waiting, now, limit=BATCH)

    def more_work(self, done: int) -> bool:
        return done >= BATCH
