"""Turn exceptions raised while serving a call into gRPC statuses (one place)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy.exc import DBAPIError, OperationalError

from weir.errors import WeirError, to_status

log = logging.getLogger("weir.server.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map WeirError to its status; database outages to UNAVAILABLE; bugs to INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except WeirError as exc:
            code, details = to_status(exc)
            await context.abort(code, details)
        except DBAPIError as exc:
            # Lost connections, a restarting Postgres, a locked SQLite file: transient.
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                log.warning("database unavailable during %s: %s", method.__name__, exc.orig)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "the metadata database is unavailable; retry"
                )
            log.exception("database error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"database error: {type(exc.orig).__name__}")
        except Exception as exc:
            log.exception("error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: abort raises")

    return wrapper
