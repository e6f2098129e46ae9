"""The shape every background service shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import datetime
from typing import ClassVar

from sqlalchemy.exc import DBAPIError

from weir.server.clock import Clock

log = logging.getLogger("weir.server.services")


class Service(ABC):
    name: ClassVar[str]

    def __init__(self, clock: Clock, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._wake = asyncio.Event()

    @abstractmethod
    async def tick(self, now: datetime) -> int:
        """One pass; returns how much it did (0 when there was nothing to do)."""

    def more_work(self, done: int) -> bool:
        """Whether to run the next pass at once (a full batch suggests more waiting)."""
        return False

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            done = 0
            try:
                done = await self.tick(self.clock.now())
            except DBAPIError as exc:
                log.warning("%s: database unavailable (%s); will retry", self.name, exc.orig)
            except Exception:
                log.exception("%s failed; will retry", self.name)
            if self.more_work(done):
                continue
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waits, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
