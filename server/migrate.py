"""Schema migrations through alembic: `weir db upgrade|downgrade|check`.

The server refuses to start unless the database is exactly at the newest
revision this Weir knows, and says which command fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from weir.errors import FailedPrecondition
from weir.server.store.db import make_engine, normalise_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaState(StrEnum):
    EMPTY = "empty"
    BEHIND = "behind"
    CURRENT = "current"
    AHEAD = "ahead"


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    current: str | None
    head: str

    def describe(self, url: str) -> str:
        where = _safe(url)
        match self.state:
            case SchemaState.CURRENT:
                return f"database {where} is up to date (revision {self.head})"
            case SchemaState.EMPTY:
                return f"database {where} has no Weir schema yet: run `weir db upgrade`"
            case SchemaState.BEHIND:
                return (
                    f"database {where} is at revision {self.current}, this Weir needs {self.head}: "
                    "run `weir db upgrade`"
                )
            case SchemaState.AHEAD:
                return (
                    f"database {where} is at revision {self.current}, which this Weir does not know "
                    f"(newest known: {self.head}); it was upgraded by a newer Weir: upgrade Weir"
                )


class SchemaError(FailedPrecondition):
    """The database schema does not match this version of Weir."""


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def head() -> str:
    script = ScriptDirectory.from_config(config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def status(engine: Engine) -> SchemaStatus:
    script = ScriptDirectory.from_config(config(str(engine.url)))
    newest = head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        state = SchemaState.EMPTY
    elif current == newest:
        state = SchemaState.CURRENT
    else:
        known = {rev.revision for rev in script.walk_revisions()}
        state = SchemaState.BEHIND if current in known else SchemaState.AHEAD
    return SchemaStatus(state=state, current=current, head=newest)


def check(engine: Engine) -> None:
    """Raise SchemaError unless the schema is exactly at head."""
    st = status(engine)
    if st.state is not SchemaState.CURRENT:
        raise SchemaError(st.describe(str(engine.url)))


def upgrade(url: str, revision: str = "head") -> SchemaStatus:
    engine = make_engine(url)
    try:
        st = status(engine)
        if st.state is SchemaState.AHEAD:
            raise SchemaError(st.describe(url))
        with engine.begin() as conn:
            cfg = config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return status(engine)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> SchemaStatus:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
        return status(engine)
    finally:
        engine.dispose()


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
