"""`weir server`: the gRPC server process around the control plane."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from weir import __version__
from weir.config import Settings
from weir.errors import WeirError
from weir.server import migrate
from weir.server.api.control_service import ControlService
from weir.server.api.worker_service import WorkerService
from weir.server.clock import Clock, DatabaseClock, SystemClock
from weir.server.plane import ControlPlane
from weir.server.services.base import Service
from weir.server.services.clock_sync import ClockSync
from weir.server.services.db_watchdog import DatabaseWatchdog
from weir.server.services.safety_poll import SafetyPoll
from weir.server.services.sweep import ExpirySweep
from weir.server.store.db import Database
from weir.v1 import control_pb2, control_pb2_grpc, worker_pb2, worker_pb2_grpc

if TYPE_CHECKING:
    from weir.server.notify import PgNotifier

log = logging.getLogger("weir.server")

SERVICE_NAMES = (
    control_pb2.DESCRIPTOR.services_by_name["ControlService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
)

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Two servers must never share a port silently.
    ("grpc.so_reuseport", 0),
    # Long-polls idle for up to a minute: accept client keepalive pings.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class StartupError(WeirError):
    """The server cannot start (schema, port, database)."""


@dataclass
class Bound:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Server:
    """The control plane served over gRPC.

    `start()` checks the database schema and binds; `stop()` stops accepting,
    lets in-flight transactions finish and closes the database.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, pool_size=settings.db_pool_size)
        if clock is None:
            clock = SystemClock() if self.db.is_sqlite else DatabaseClock(self.db.engine)
        self.clock = clock
        self.plane = ControlPlane(self.db, clock, settings, version=__version__)
        self._grpc: grpc.aio.Server | None = None
        self._worker_service: WorkerService | None = None
        self.bound: Bound | None = None
        self.notifier: PgNotifier | None = None
        self._stop_services = asyncio.Event()
        self._service_tasks: list[asyncio.Task[None]] = []
        #: Fails when the server must exit (the database stayed unreachable).
        self.fatal: asyncio.Future[None] | None = None

    async def start(self) -> Bound:
        try:
            await asyncio.to_thread(migrate.check, self.db.engine)
        except migrate.SchemaError:
            raise
        except Exception as exc:
            raise StartupError(f"cannot reach the database {_safe_url(self.db.url)}: {exc}") from exc
        if isinstance(self.clock, DatabaseClock):
            offset = await asyncio.to_thread(self.clock.sync)
            log.info("database clock offset %.1f ms", offset.total_seconds() * 1000)

        server = grpc.aio.server(options=GRPC_OPTIONS)
        control_pb2_grpc.add_ControlServiceServicer_to_server(ControlService(self.plane), server)
        self._worker_service = WorkerService(self.plane)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(self._worker_service, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        host = self.settings.grpc_bind
        try:
            port = server.add_insecure_port(f"{host}:{self.settings.grpc_port}")
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {host}:{self.settings.grpc_port}: {exc}") from exc
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._grpc = server
        self.bound = Bound(host, port)
        self._start_services()
        log.info(
            "weir server %s listening on %s (database %s)", __version__, self.bound, _safe_url(self.db.url)
        )
        return self.bound

    def _start_services(self) -> None:
        s = self.settings
        self.fatal = asyncio.get_running_loop().create_future()
        services: list[Service] = [
            ExpirySweep(self.plane, s.sweep_seconds),
            SafetyPoll(self.plane.waker, self.clock, s.safety_poll_seconds),
            DatabaseWatchdog(self.db, self.clock, limit=s.db_unavailable_exit_seconds, fatal=self.fatal),
        ]
        if isinstance(self.clock, DatabaseClock):
            services.append(ClockSync(self.clock))
        runners = [service.run(self._stop_services) for service in services]
        if not self.db.is_sqlite:
            # Imported here: psycopg (~9 MiB) stays out of a SQLite server.
            from weir.server.notify import PgNotifier

            self.notifier = PgNotifier(self.db.url, self.plane.waker)
            self.plane.announce = self.notifier.publish
            runners.append(self.notifier.run(self._stop_services))
        self._service_tasks = [asyncio.ensure_future(r) for r in runners]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting calls, let running ones finish within `grace`, then close."""
        if self._grpc is not None:
            # Long-polls and report streams would hold shutdown for the whole
            # grace: end them now (a stream once its current request is answered).
            self.plane.waker.notify_all()
            if self._worker_service is not None:
                self._worker_service.close_streams()
            await self._grpc.stop(grace)
            self._grpc = None
        self._stop_services.set()
        if self._service_tasks:
            await asyncio.gather(*self._service_tasks, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.close()
        await self.plane.drain()
        await asyncio.to_thread(self.db.close)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Start, then run until SIGTERM/SIGINT (or `stop` is set)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        assert self.fatal is not None
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopped, self.fatal], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            log.info("shutting down")
            await self.stop()
        if self.fatal.done():
            self.fatal.result()  # raises why the server gave up


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
