"""Shared fixtures: fresh databases (SQLite and real Postgres) and free ports.

Postgres tests use WEIR_TEST_DATABASE_URL (any database on the target
server; it is only used to create and drop per-test databases). Without it
they are skipped, with the reason printed by `pytest -ra`.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ENV = "WEIR_TEST_DATABASE_URL"
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "dags"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin() -> str | None:
    return os.environ.get(PG_ENV) or None


def _with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    from weir.server.store.db import normalise_url

    return make_url(normalise_url(url)).set(database=name).render_as_string(hide_password=False)


def _admin_execute(admin_url: str, *statements: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(admin_url)
    with psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=u.database or "postgres",
        autocommit=True,
    ) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[str, str]]:
    """(admin url, template database name) migrated once per test session."""
    admin = _pg_admin()
    if admin is None:
        pytest.skip(f"Postgres tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1/postgres)")
    from weir.server import migrate

    name = f"weir_tpl_{uuid.uuid4().hex[:10]}"
    _admin_execute(admin, f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(_with_db(admin, name))
        yield admin, name
    finally:
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated Postgres database for one test."""
    admin, template = pg_template
    name = f"weir_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    try:
        yield _with_db(admin, name)
    finally:
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A fresh Postgres database with no schema (migration tests)."""
    admin = _pg_admin()
    if admin is None:
        pytest.skip(f"Postgres tests need {PG_ENV}")
    name = f"weir_e_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin, f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(admin, name)
    finally:
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from weir.server import migrate

    path = tmp_path_factory.mktemp("tpl") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    path = tmp_path / "weir.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on real Postgres."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """A test that fails half-way must not leave servers or workers running."""
    from tests.helpers import SPAWNED

    yield
    while SPAWNED:
        proc = SPAWNED.pop()
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(10)
