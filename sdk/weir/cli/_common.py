"""Shared CLI plumbing: the console, errors as one line, formatting."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from weir.config import Settings
from weir.config import load as load_settings
from weir.states import RunState, TaskState

F = TypeVar("F", bound=Callable[..., Any])

# Piped output (grep, scripts) keeps each row on one line whatever its length.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 1000)

STATE_STYLE = {
    TaskState.SUCCESS: "green",
    TaskState.FAILED: "red",
    TaskState.UPSTREAM_FAILED: "dark_orange",
    TaskState.UP_FOR_RETRY: "yellow",
    TaskState.RUNNING: "cyan",
    TaskState.QUEUED: "grey62",
    TaskState.SKIPPED: "magenta",
    RunState.SUCCESS: "green",
    RunState.FAILED: "red",
    RunState.RUNNING: "cyan",
    RunState.QUEUED: "grey62",
}


def styled(state: TaskState | RunState, width: int = 0) -> str:
    """The state in its colour, padded to `width` visible characters."""
    style = STATE_STYLE.get(state)
    text = state.value.ljust(width)
    return f"[{style}]{text}[/]" if style else text


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]Error:[/] {message}", soft_wrap=True)
    sys.exit(code)


def settings(ctx: click.Context) -> Settings:
    obj: Settings | None = ctx.obj
    if obj is None:
        try:
            obj = load_settings()
        except Exception as exc:  # pydantic names the setting at fault
            fail(f"invalid configuration: {exc}")
        ctx.obj = obj
    return obj


def server_option(f: F) -> F:
    return click.option(
        "--server",
        "server",
        envvar="WEIR_SERVER",
        metavar="HOST:PORT",
        help="Weir server to talk to. [env: WEIR_SERVER; default: localhost:50051]",
    )(f)


def parse_conf(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"--conf is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail("--conf must be a JSON object, for example '{\"limit\": 10}'")
    return value


def when(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def since(dt: datetime | None) -> timedelta | None:
    return None if dt is None else datetime.now(UTC) - dt


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
