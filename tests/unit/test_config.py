"""Settings: defaults, WEIR_* variables over weir.toml, validation, `describe()`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from weir import config
from weir.config import Settings


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No WEIR_* variable from the outside; home and cwd in tmp_path. Returns the home."""
    for name in list(os.environ):
        if name.startswith("WEIR_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("WEIR_HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return home


def sources(s: Settings) -> dict[str, str]:
    return {name: source for name, _, source, _ in s.describe()}


def values(s: Settings) -> dict[str, object]:
    return {name: value for name, value, _, _ in s.describe()}


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = isolate(monkeypatch, tmp_path)
    s = config.load()
    assert s.home == home
    assert s.database_url == f"sqlite:///{home / 'weir.db'}"
    assert s.dags_folder == home / "dags"
    assert s.server == "localhost:50051"
    assert (s.grpc_port, s.metrics_port, s.web_port) == (50051, 9464, 8080)
    assert (s.lease_seconds, s.heartbeat_seconds) == (30, 10)
    assert s.token is None
    assert s.queues == ["default"]
    assert config.config_file() is None


def test_home_defaults_to_dot_weir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.delenv("WEIR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    s = config.load()
    assert s.home == tmp_path / ".weir"
    assert s.database_url == f"sqlite:///{tmp_path / '.weir' / 'weir.db'}"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WEIR_LEASE_SECONDS", "60")
    monkeypatch.setenv("WEIR_SERVER", "example:1234")
    monkeypatch.setenv("WEIR_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("WEIR_WORKER_QUEUES", "default, gpu ,,")
    s = config.load()
    assert s.lease_seconds == 60
    assert s.server == "example:1234"
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.queues == ["default", "gpu"]


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WEIR_GRPC_PORT", "6000")
    assert config.load(grpc_port=7000, server=None).grpc_port == 7000


def test_weir_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    path = tmp_path / "elsewhere.toml"
    path.write_text('lease_seconds = 90\nheartbeat_seconds = 20\nserver = "filehost:1"\n')
    monkeypatch.setenv("WEIR_CONFIG", str(path))
    s = config.load()
    assert config.config_file() == path
    assert (s.lease_seconds, s.heartbeat_seconds, s.server) == (90, 20, "filehost:1")


def test_weir_toml_in_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    Path("weir.toml").write_text("web_port = 9090\n")
    s = config.load()
    assert config.config_file() == Path.cwd() / "weir.toml"
    assert s.web_port == 9090


def test_weir_toml_in_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = isolate(monkeypatch, tmp_path)
    (home / "weir.toml").write_text("metrics_port = 9999\n")
    assert config.load().metrics_port == 9999


def test_weir_config_wins_over_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    Path("weir.toml").write_text("web_port = 1111\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("web_port = 2222\n")
    monkeypatch.setenv("WEIR_CONFIG", str(explicit))
    assert config.load().web_port == 2222


def test_environment_beats_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    Path("weir.toml").write_text('server = "file:1"\nweb_port = 1111\n')
    monkeypatch.setenv("WEIR_SERVER", "env:2")
    s = config.load()
    assert s.server == "env:2"
    assert s.web_port == 1111


def test_home_in_file_moves_database_and_dags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.delenv("WEIR_HOME")
    other = tmp_path / "other-home"
    Path("weir.toml").write_text(f'home = "{other}"\n')
    s = config.load()
    assert s.home == other
    assert s.database_url == f"sqlite:///{other / 'weir.db'}"
    assert s.dags_folder == other / "dags"


def test_heartbeat_must_be_at_most_a_third_of_the_lease(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WEIR_LEASE_SECONDS", "30")
    monkeypatch.setenv("WEIR_HEARTBEAT_SECONDS", "11")
    with pytest.raises(ValidationError) as info:
        config.load()
    message = str(info.value).lower()
    assert "heartbeat_seconds" in message and "lease_seconds" in message
    assert "third" in message
    monkeypatch.setenv("WEIR_HEARTBEAT_SECONDS", "10")
    assert config.load().heartbeat_seconds == 10


def test_heartbeat_check_applies_to_file_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    Path("weir.toml").write_text("lease_seconds = 6\n")
    with pytest.raises(ValidationError, match="heartbeat_seconds"):
        config.load()


@pytest.mark.parametrize(
    ("name", "value"),
    [("WEIR_LEASE_SECONDS", "0"), ("WEIR_GRPC_PORT", "not-a-port"), ("WEIR_WORKER_CONCURRENCY", "0")],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        config.load()
    assert name.removeprefix("WEIR_").lower() in str(info.value)


def test_describe_reports_the_source_of_each_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    path = tmp_path / "cfg.toml"
    path.write_text("web_port = 1111\nlease_seconds = 60\n")
    monkeypatch.setenv("WEIR_CONFIG", str(path))
    monkeypatch.setenv("WEIR_LEASE_SECONDS", "45")
    s = config.load()
    src = sources(s)
    assert src["web_port"] == f"file {path}"
    assert src["lease_seconds"] == "env WEIR_LEASE_SECONDS"
    assert src["home"] == "env WEIR_HOME"
    assert src["grpc_port"] == "default"
    assert values(s)["lease_seconds"] == 45


def test_describe_covers_every_setting_with_a_description(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    rows = config.load().describe()
    assert [name for name, _, _, _ in rows] == list(Settings.model_fields)
    for name, _, _, description in rows:
        assert description, f"{name} has no description"


def test_describe_masks_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("WEIR_TOKEN", "s3cret-token")
    s = config.load()
    assert s.token is not None and s.token.get_secret_value() == "s3cret-token"
    assert values(s)["token"] == "********"
    assert "s3cret-token" not in repr(s.describe())
    assert "s3cret-token" not in repr(s)
