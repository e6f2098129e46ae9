"""Weir's error types, and their mapping to and from gRPC status codes.

This module is the one place where an exception becomes a status code and a
status code becomes an exception: the server aborts with `to_status`, the
client raises `from_rpc_error`.
"""

from __future__ import annotations

from typing import Any

import grpc


class WeirError(Exception):
    """Base class of every error Weir raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, for InvalidArgument.
        self.field = field

    def __str__(self) -> str:
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message


class NotFound(WeirError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(WeirError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(WeirError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(WeirError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class LeaseLost(FailedPrecondition):
    """A report named an attempt that is no longer current; nothing was applied."""


class Unavailable(WeirError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(WeirError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(WeirError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(WeirError):
    code = grpc.StatusCode.PERMISSION_DENIED


class DagDefinitionError(InvalidArgument):
    """A DAG file describes an invalid DAG (raised while the DAG is defined)."""


_BY_CODE: dict[grpc.StatusCode, type[WeirError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
    )
}


def to_status(err: WeirError) -> tuple[grpc.StatusCode, str]:
    """The status code and details a server aborts with for `err`."""
    return err.code, str(err)


def from_rpc_error(err: grpc.RpcError) -> WeirError:
    """The WeirError a client raises for a failed call."""
    # Every RpcError a channel raises is also a grpc.Call (typeshed cannot express that).
    call: Any = err
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    details = (call.details() if hasattr(call, "details") else None) or str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"cannot reach the Weir server ({details})"
    cls = _BY_CODE.get(code, WeirError)
    error = cls(details)
    error.code = code
    return error


class SkipTask(Exception):
    """Raise inside a task to end it as `skipped` instead of failed."""
