"""Which database errors mean "the database is unreachable" and which only "this try lost"."""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy.exc import OperationalError

from weir.server.store.db import is_conflict, is_transient


def test_a_lost_transaction_is_retried_but_is_no_outage() -> None:
    for orig in (
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        sqlite3.OperationalError("database is locked"),
    ):
        exc = OperationalError("UPDATE ...", {}, orig)
        assert is_transient(exc) and is_conflict(exc), orig


def test_a_lost_connection_is_an_outage() -> None:
    exc = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))
    assert is_transient(exc) and not is_conflict(exc)
