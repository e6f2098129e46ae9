"""Configuration: `WEIR_*` environment variables over a `weir.toml` file.

One typed settings object for every process; `weir config show` prints each
value and where it came from. The TOML file is the first of `$WEIR_CONFIG`,
`./weir.toml` and `$WEIR_HOME/weir.toml` that exists; its keys are the
setting names without the prefix, in lower case (`lease_seconds = 30`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "WEIR_"


def default_home() -> Path:
    return Path(os.environ.get("WEIR_HOME") or Path.home() / ".weir").expanduser()


def config_file() -> Path | None:
    """The TOML file settings are read from, if any."""
    explicit = os.environ.get("WEIR_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    for candidate in (Path.cwd() / "weir.toml", default_home() / "weir.toml"):
        if candidate.is_file():
            return candidate
    return None


class Settings(BaseSettings):
    """Every Weir setting. Each may be set as `WEIR_<NAME>` or in weir.toml."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    home: Path = Field(
        default_factory=default_home,
        description="Where standalone keeps its SQLite file and other local state.",
    )
    database_url: str = Field(
        default="",
        description="Metadata database of the server (sqlite:///... or postgresql+psycopg://...). "
        "Default: sqlite:///$WEIR_HOME/weir.db.",
    )
    server: str = Field(
        default="localhost:50051", description="Address workers, the SDK, the CLI and the web app dial."
    )
    grpc_bind: str = Field(default="0.0.0.0", description="Interface the gRPC server listens on.")
    grpc_port: int = Field(default=50051, description="Port of the gRPC server.")
    metrics_port: int = Field(default=9464, description="Port of the Prometheus endpoint.")
    web_port: int = Field(default=8080, description="Port of the dashboard.")
    lease_seconds: float = Field(
        default=30, gt=0, description="Lease granted to a worker on claim and on every renewal."
    )
    heartbeat_seconds: float = Field(
        default=10, gt=0, description="Worker heartbeat interval; at most a third of the lease."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token the SDK, CLI and workers send to the server."
    )
    dags_folder: Path | None = Field(
        default=None, description="Folder of DAG files for workers. Default: $WEIR_HOME/dags."
    )
    worker_concurrency: int = Field(default=8, ge=1, description="Tasks a worker runs at once.")
    worker_prefetch: int | None = Field(
        default=None,
        ge=0,
        description="Tasks a worker claims ahead of its idle runners while tasks are short "
        "(recent ones ran under 50 ms), at most what the runners get through in 0.25 s; "
        "unset: 16 per slot; 0: never.",
    )
    worker_queues: str = Field(default="default", description="Comma-separated queues a worker claims from.")
    poll_wait_seconds: float = Field(
        default=60,
        gt=0,
        le=60,
        description="How long a worker's poll waits on the server for work (at most 60 s).",
    )
    max_result_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest task result (JSON bytes) the server stores."
    )
    sweep_seconds: float = Field(
        default=5, gt=0, description="How often the server looks for expired leases and start timeouts."
    )
    safety_poll_seconds: float = Field(
        default=2, gt=0, description="How often a waiting poll per queue looks for work missed by wake-ups."
    )
    db_unavailable_exit_seconds: float = Field(
        default=60, gt=0, description="The server exits non-zero after the database is unreachable this long."
    )
    shutdown_grace_seconds: float = Field(
        default=60,
        ge=0,
        description="On SIGTERM, how long a worker lets running tasks finish before giving them back.",
    )
    db_pool_size: int = Field(
        default=6, ge=1, description="Database connections of the server (Postgres); SQLite uses one writer."
    )
    max_waiting_triggers: int = Field(
        default=1000,
        ge=1,
        description="Triggers a server holds waiting for the database before refusing more "
        "(RESOURCE_EXHAUSTED, retry later).",
    )
    log_level: str = Field(default="INFO", description="Log level of server and worker processes.")

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'weir.db'}"
        if self.dags_folder is None:
            self.dags_folder = self.home / "dags"
        if self.heartbeat_seconds > self.lease_seconds / 3:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds:g}) must be at most a third of "
                f"lease_seconds ({self.lease_seconds:g})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    def describe(self) -> list[tuple[str, Any, str, str]]:
        """(name, value, source, description) of every setting, for `weir config show`."""
        path = config_file()
        from_file: set[str] = set()
        if path is not None and path.is_file():
            import tomllib

            from_file = set(tomllib.loads(path.read_text()))
        rows = []
        for name, info in type(self).model_fields.items():
            env = ENV_PREFIX + name.upper()
            if env in os.environ:
                source = f"env {env}"
            elif name in from_file:
                source = f"file {path}"
            else:
                source = "default"
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            rows.append((name, value, source, info.description or ""))
        return rows


def load(**overrides: Any) -> Settings:
    """Read the settings; `overrides` (from command-line options) win over everything."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
