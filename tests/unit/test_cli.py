"""The `weir` command line: help everywhere, local DAG tests, config, clear errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from weir.cli import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "dags"
WEIR = Path(sys.executable).parent / "weir"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No outside WEIR_* settings or weir.toml; DAG folders added to sys.path are removed."""
    for name in list(os.environ):
        if name.startswith("WEIR_"):
            monkeypatch.delenv(name)
    home = tmp_path / "weir-home"
    home.mkdir()
    monkeypatch.setenv("WEIR_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # etl_orders writes a SQLite file to the temporary directory.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Long tmp_path values would otherwise wrap at 80 columns (see the piped test below).
    from weir.cli._common import console, err_console

    monkeypatch.setattr(console, "_width", 400)
    monkeypatch.setattr(err_console, "_width", 400)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="weir")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


ALL_COMMANDS = [(), *command_paths(cli)]


def test_the_command_tree_has_the_documented_commands() -> None:
    names = {" ".join(p) for p in ALL_COMMANDS}
    for expected in (
        "server",
        "worker",
        "standalone",
        "dags list",
        "dags deploy",
        "dags trigger",
        "dags test",
        "dags pause",
        "dags unpause",
        "runs list",
        "runs show",
        "runs wait",
        "tasks logs",
        "db upgrade",
        "db downgrade",
        "db check",
        "config show",
    ):
        assert expected in names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "weir")
def test_help_works_for_every_command(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = run(*path, flag)
        assert result.exit_code == 0, result.output
        assert "Usage: weir" in result.output
        assert result.exception is None


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "weir" in result.output


def test_dags_test_example_succeeds() -> None:
    result = run("dags", "test", "etl_orders", "--dags", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert "DAG etl_orders: success" in result.output
    for task_id in ("extract", "clean", "aggregate", "load", "report"):
        assert f"success {task_id}" in result.output


def test_dags_test_with_conf() -> None:
    result = run("dags", "test", "etl_orders", "--dags", str(EXAMPLES), "--conf", '{"min_amount": 20}')
    assert result.exit_code == 0, result.output
    assert "min_amount=20" in result.output


def test_dags_test_of_a_failing_dag_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "failing.py").write_text(
        textwrap.dedent(
            """
            from weir import dag, task

            @dag
            def failing_dag():
                @task
                def explode() -> None:
                    raise ValueError("kaboom")

                @task
                def never(x) -> None:
                    return None

                never(explode())

            failing_dag()
            """
        )
    )
    result = run("dags", "test", "failing_dag", "--dags", str(folder))
    assert result.exit_code == 1, result.output
    assert "failed explode" in result.output
    assert "ValueError: kaboom" in result.output
    assert "upstream_failed never" in result.output
    assert "DAG failing_dag: failed" in result.output


def test_dags_test_unknown_dag_lists_the_broken_files(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "broken.py").write_text("raise RuntimeError('broken file')\n")
    result = run("dags", "test", "nope", "--dags", str(folder))
    assert result.exit_code == 1
    assert "broken.py" in result.output and "broken file" in result.output
    assert "Error: no DAG 'nope'" in result.stderr


def test_dags_test_missing_folder(tmp_path: Path) -> None:
    result = run("dags", "test", "x", "--dags", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert "Error: DAG folder" in result.stderr and "does not exist" in result.stderr


def test_dags_test_with_bad_conf() -> None:
    result = run("dags", "test", "etl_orders", "--dags", str(EXAMPLES), "--conf", "not json")
    assert result.exit_code == 1
    assert "Error: --conf is not valid JSON" in result.stderr


def test_config_show_lists_every_setting() -> None:
    result = run("config", "show")
    assert result.exit_code == 0, result.output
    for name in (
        "WEIR_LEASE_SECONDS",
        "WEIR_HEARTBEAT_SECONDS",
        "WEIR_SERVER",
        "WEIR_DATABASE_URL",
        "WEIR_HOME",
    ):
        assert name in result.output
    assert "config file: none" in result.output
    prefetch = next(line for line in result.output.splitlines() if "WEIR_WORKER_PREFETCH" in line)
    assert "unset" in prefetch and "None" not in prefetch


def test_config_show_reports_sources_and_masks_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "weir.toml").write_text("web_port = 8181\n")
    monkeypatch.setenv("WEIR_LEASE_SECONDS", "45")
    monkeypatch.setenv("WEIR_TOKEN", "very-secret")
    result = run("config", "show")
    assert result.exit_code == 0, result.output
    assert "8181" in result.output
    assert "env WEIR_LEASE_SECONDS" in result.output
    assert "very-secret" not in result.output
    assert "********" in result.output


def test_config_show_piped_keeps_names_and_values_whole(tmp_path: Path) -> None:
    # `weir config show | grep WEIR_DATABASE_URL` is how scripts read a setting:
    # piped output must not fold setting names or values across lines.
    home = tmp_path / "a-rather-long-folder-name-for-the-weir-home-directory"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_") and k != "COLUMNS"}
    env["WEIR_HOME"] = str(home)
    proc = subprocess.run(
        [str(WEIR), "config", "show"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("WEIR_HEARTBEAT_SECONDS", "WEIR_WORKER_CONCURRENCY", "WEIR_DATABASE_URL"):
        assert any(name in line for line in lines), name
    url_line = next(line for line in lines if "WEIR_DATABASE_URL" in line)
    assert f"sqlite:///{home / 'weir.db'}" in url_line


def test_invalid_configuration_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIR_HEARTBEAT_SECONDS", "25")
    result = run("config", "show")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: invalid configuration")
    assert "heartbeat_seconds" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("dags", "list"),
        ("dags", "pause", "etl_orders"),
        ("dags", "trigger", "etl_orders"),
        ("runs", "list"),
        ("runs", "show", "some_run"),
        ("tasks", "logs", "some_run", "some_task"),
    ],
    ids=" ".join,
)
def test_unreachable_server_is_one_error_line(args: tuple[str, ...]) -> None:
    started = time.monotonic()
    result = run(*args, "--server", f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: cannot reach the Weir server")
    assert result.stdout == ""


def test_unreachable_server_from_the_real_entry_point(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["WEIR_HOME"] = str(tmp_path)
    env["WEIR_SERVER"] = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [str(WEIR), "dags", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:")


def test_dags_test_from_the_real_entry_point(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["WEIR_HOME"] = str(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [str(WEIR), "dags", "test", "etl_orders", "--dags", str(EXAMPLES)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DAG etl_orders: success" in proc.stdout


@pytest.mark.parametrize(
    ("conf", "message"),
    [("not json", "Error: --conf is not valid JSON"), ("[1, 2]", "Error: --conf must be a JSON object")],
)
def test_trigger_with_bad_conf(conf: str, message: str) -> None:
    result = run("dags", "trigger", "etl_orders", "--conf", conf, "--server", f"127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
