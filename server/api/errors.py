"""Turn exceptions raised while serving a call into gRPC statuses (one place)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from sqlalchemy.exc import DBAPIError, OperationalError

from weir.errors import WeirError, to_status

log = logging.getLogger("weir.server.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Ctx], Awaitable[Resp]]
StreamHandler = Callable[[Any, AsyncIterator[Req], Ctx], AsyncIterator[Resp]]


def rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map WeirError to its status; database outages to UNAVAILABLE; bugs to INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method.__name__, exc)

    return wrapper


def rpc_stream(method: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
    """`rpc` for a handler that answers a stream of requests: the first error ends
    the stream with the status a unary call would have failed with."""

    @functools.wraps(method)
    async def wrapper(self: Any, requests: AsyncIterator[Req], context: Ctx) -> AsyncIterator[Resp]:
        try:
            async for response in method(self, requests, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method.__name__, exc)

    return wrapper


async def _abort(context: Ctx, name: str, exc: Exception) -> NoReturn:
    if isinstance(exc, WeirError):
        code, details = to_status(exc)
        await context.abort(code, details)
    if isinstance(exc, DBAPIError):
        # Lost connections, a restarting Postgres, a locked SQLite file: transient.
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            log.warning("database unavailable during %s: %s", name, exc.orig)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the metadata database is unavailable; retry")
        log.error("database error in %s", name, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"database error: {type(exc.orig).__name__}")
    log.error("error in %s", name, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: abort raises")
