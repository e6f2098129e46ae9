"""Sweeps: services that end what outlived its deadline, a batch per pass."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from weir.server import completion
from weir.server.plane import ControlPlane
from weir.server.services.base import Service

BATCH = 500


class Sweep(Service):
    """Runs `sweep(conn, now, catalog, limit=...)` in a transaction each pass."""

    sweep: ClassVar[Callable[..., completion.Completion]]

    def __init__(self, plane: ControlPlane, interval: float) -> None:
        super().__init__(plane.clock, interval)
        self.plane = plane

    async def tick(self, now: datetime) -> int:
        return await self.plane.sweep(type(self).sweep, now, limit=BATCH)

    def more_work(self, done: int) -> bool:
        return done >= BATCH  # a full batch: more may be waiting, go again at once
