"""Checks on request fields, raising InvalidArgument that names the field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from weir import _convert as cv
from weir.errors import InvalidArgument
from weir.spec import check_id

T = TypeVar("T")


def required_id(value: str, field: str, kind: str | None = None) -> str:
    if why := check_id(kind or field, value):
        raise InvalidArgument(why, field=field)
    return value


def queues(values: Sequence[str], field: str = "queues") -> list[str]:
    out = list(values) or ["default"]
    for i, q in enumerate(out):
        required_id(q, f"{field}[{i}]", "queue")
    return out


def json_object(data: bytes, field: str) -> dict[str, Any]:
    try:
        value = cv.from_json_bytes(data, field, {})
    except ValueError as exc:
        raise InvalidArgument(str(exc), field=field) from None
    if not isinstance(value, dict):
        raise InvalidArgument("must be a JSON object", field=field)
    return value


def seconds(msg: Any, name: str, *, default: float, field: str) -> float:
    value = cv.from_dur(msg, name)
    if value is None:
        return default
    if value < timedelta(0):
        raise InvalidArgument("must not be negative", field=field)
    return value.total_seconds()


def converted(fn: Callable[..., T], *args: Any, field: str) -> T:
    """Run a proto conversion; its ValueError becomes InvalidArgument."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field=field) from None
