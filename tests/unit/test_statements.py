"""The server's prebuilt statements stay within what psycopg caches the parsing of."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH  # where psycopg keeps its limit
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.sql import ClauseElement, Executable

from weir.server.store import dag_runs, dags
from weir.server.store import task_instances as tis


def _prebuilt(module: ModuleType) -> dict[str, ClauseElement]:
    """Module-level statements (and dicts of them), by name; not the SQLite
    variants (a dict keyed by `postgres`)."""
    found: dict[str, ClauseElement] = {}
    for name, value in vars(module).items():
        values: dict[Any, Any] = value if isinstance(value, dict) else {None: value}
        for key, v in values.items():
            if key is not False and isinstance(v, ClauseElement) and isinstance(v, Executable):
                found[f"{module.__name__.rsplit('.', 1)[-1]}.{name}[{key}]"] = v
    return found


STATEMENTS = {k: v for m in (tis, dag_runs, dags) for k, v in _prebuilt(m).items()}


def test_the_hot_statements_are_found() -> None:
    assert {"task_instances._HOP[AtZero.START]", "task_instances._CLAIM[True]"} <= STATEMENTS.keys()


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_prebuilt_statement_fits_psycopgs_query_cache(name: str) -> None:
    # psycopg converts a query's placeholders on every execution unless the query
    # is at most this long; above it, a hop spent ~0.3 ms re-parsing its statement.
    sql = str(STATEMENTS[name].compile(dialect=psycopg_dialect()))
    assert len(sql.encode()) <= MAX_CACHED_STATEMENT_LENGTH, f"{name} is {len(sql)} characters"
