"""The few statements whose SQL differs between SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert_ignoring_conflict(conn: Connection, table: Table, index_elements: list[str]) -> Any:
    """INSERT ... ON CONFLICT (index_elements) DO NOTHING, for this connection's backend."""
    return insert_ignoring_conflict_on(is_postgres(conn), table, index_elements)


def insert_ignoring_conflict_on(postgres: bool, table: Table, index_elements: list[str]) -> Any:
    """The same, for a statement built once per backend."""
    return (postgresql.insert(table) if postgres else sqlite.insert(table)).on_conflict_do_nothing(
        index_elements=index_elements
    )


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"
