"""Weir's error types, and their mapping to and from gRPC status codes.

This module is the one place where an exception becomes a status code and a
status code becomes an exception: the server aborts with `to_status`, the
client raises `from_rpc_error`. Codes are kept by name so that importing
`weir` (as every DAG file and task runner does) does not load gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import grpc


class WeirError(Exception):
    """Base class of every error Weir raises on purpose."""

    #: Name of the grpc.StatusCode this error travels as.
    code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, for InvalidArgument.
        self.field = field
        #: The status a client received, when this error came from a call.
        self.status: str = type(self).code

    def __str__(self) -> str:
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message


class NotFound(WeirError):
    code = "NOT_FOUND"


class AlreadyExists(WeirError):
    code = "ALREADY_EXISTS"


class InvalidArgument(WeirError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(WeirError):
    code = "FAILED_PRECONDITION"


class LeaseLost(FailedPrecondition):
    """A report named an attempt that is no longer current; nothing was applied."""


class ResourceExhausted(WeirError):
    """The server is at a limit (too much work waiting); retry later."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(WeirError):
    code = "UNAVAILABLE"


class DeadlineExceeded(WeirError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(WeirError):
    code = "UNAUTHENTICATED"


class PermissionDenied(WeirError):
    code = "PERMISSION_DENIED"


class DagDefinitionError(InvalidArgument):
    """A DAG file describes an invalid DAG (raised while the DAG is defined)."""


class SkipTask(Exception):
    """Raise inside a task to end it as `skipped` instead of failed."""


_BY_CODE: dict[str, type[WeirError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
    )
}


def to_status(err: WeirError) -> tuple[grpc.StatusCode, str]:
    """The status code and details a server aborts with for `err`."""
    import grpc

    return grpc.StatusCode[type(err).code], str(err)


def from_rpc_error(err: grpc.RpcError) -> WeirError:
    """The WeirError a client raises for a failed call."""
    import grpc

    # Every RpcError a channel raises is also a grpc.Call (typeshed cannot express that).
    call: Any = err
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    details = (call.details() if hasattr(call, "details") else None) or str(err)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"cannot reach the Weir server ({details})"
    cls = _BY_CODE.get(code.name, WeirError)
    error = cls(details)
    error.status = code.name
    return error
