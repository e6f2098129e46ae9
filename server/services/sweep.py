"""Expiry sweep: end what outlived its deadline, a batch per pass.

Lapsed leases fail (and retry): the worker stopped heartbeating. Tasks left
waiting past their schedule_to_start_timeout fail. Both run in one
transaction per pass (`completion.sweep`).
"""

from __future__ import annotations

from datetime import datetime

from weir.server import completion
from weir.server.plane import ControlPlane
from weir.server.services.base import Service

BATCH = 500


class ExpirySweep(Service):
    name = "expiry-sweep"

    def __init__(self, plane: ControlPlane, interval: float) -> None:
        super().__init__(plane.clock, interval)
        self.plane = plane

    async def tick(self, now: datetime) -> int:
        return await self.plane.sweep(completion.sweep, now, limit=BATCH)

    def more_work(self, done: int) -> bool:
        return done >= BATCH  # a full batch: more may be waiting, go again at once
