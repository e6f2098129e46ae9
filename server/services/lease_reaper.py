"""Lease reaper: attempts whose worker stopped heartbeating fail (and retry)."""

from __future__ import annotations

from datetime import datetime

from weir.server import completion
from weir.server.plane import ControlPlane
from weir.server.services.base import Service

BATCH = 500


class LeaseReaper(Service):
    name = "lease-reaper"

    def __init__(self, plane: ControlPlane, interval: float) -> None:
        super().__init__(plane.clock, interval)
        self.plane = plane

    async def tick(self, now: datetime) -> int:
        return await self.plane.sweep(completion.expire_leases, now, limit=BATCH)

    def more_work(self, done: int) -> bool:
        return done >= BATCH
