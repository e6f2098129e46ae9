"""Alembic migrations match the metadata, run both ways, and guard the server."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from tests.helpers import running_server
from weir.server import migrate
from weir.server.store.db import make_engine
from weir.server.store.schema import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


def test_upgrade_creates_exactly_the_schema_the_code_declares(empty_url: str) -> None:
    status = migrate.upgrade(empty_url)
    assert status.state is migrate.SchemaState.CURRENT
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == [], f"schema.py and migrations/ differ: {diff}"
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    status = migrate.downgrade(empty_url, "base")
    assert status.state is migrate.SchemaState.EMPTY
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    assert migrate.upgrade(empty_url).state is migrate.SchemaState.CURRENT


def test_upgrade_twice_keeps_the_data(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dags (dag_id, is_paused, description, tags, fileloc, task_count, created_at, "
                    "updated_at) VALUES ('kept', false, '', '[]', '', 0, '2026-01-01', '2026-01-01')"
                )
            )
        migrate.upgrade(empty_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT dag_id FROM dags")).scalars().all() == ["kept"]
    finally:
        engine.dispose()


def test_server_refuses_an_unmigrated_database(empty_url: str, tmp_path: Path) -> None:
    with (
        pytest.raises(migrate.SchemaError, match="run `weir db upgrade`"),
        running_server(empty_url, tmp_path),
    ):
        pass


def test_server_refuses_a_database_from_a_newer_weir(empty_url: str, tmp_path: Path) -> None:
    migrate.upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(migrate.SchemaError, match="upgrade Weir"), running_server(empty_url, tmp_path):
        pass
    with pytest.raises(migrate.SchemaError, match="newer Weir"):
        migrate.upgrade(empty_url)


def test_upgrading_from_the_first_revision_keeps_runs_and_tasks(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dags (dag_id, is_paused, description, tags, fileloc, task_count, created_at, "
                    "updated_at) VALUES ('old', false, '', '[]', '', 1, '2026-01-01', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO dag_versions (id, dag_id, version_hash, spec, created_at) "
                    "VALUES (1, 'old', 'h', '{}', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO dag_runs (id, run_id, dag_id, version_id, state, run_type, logical_date, conf, "
                    "queued_at) VALUES (1, 'r1', 'old', 1, 'running', 'manual', '2026-01-01', '{}', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO task_instances (id, run_pk, dag_id, task_id, map_index, state, queue, pool, "
                    "priority, attempt, try_number, max_tries, available_at) VALUES "
                    "(1, 1, 'old', 't', -1, 'queued', 'default', 'default_pool', 0, 0, 0, 1, '2026-01-01')"
                )
            )
        assert migrate.upgrade(empty_url).state is migrate.SchemaState.CURRENT
        with engine.connect() as conn:
            row = conn.execute(text("SELECT task_id, state, start_deadline FROM task_instances")).one()
            assert tuple(row) == ("t", "queued", None)
            assert conn.execute(text("SELECT run_id FROM dag_runs")).scalar_one() == "r1"
    finally:
        engine.dispose()
