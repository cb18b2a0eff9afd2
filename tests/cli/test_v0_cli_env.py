"""v0's CLI environment: ``.env`` and ``-e``, ``@cocoindex.settings``, the embedded notice,
``-q`` and ``--setup``, through the real ``cocod`` command in a subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocod.storage.embedded import EmbeddedPostgres
from tests.cli.apps import admin, clean_env, run_cli, table_rows, url_for, write_app

ROWS = [("a.md", 3), ("b.md", 2)]


@pytest.fixture
def second_database(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """Another database on the embedded server, for "the rows went there, not here"."""
    name = f"second_{os.getpid()}_{id(object())}"
    admin(postgres_server, f'CREATE DATABASE "{name}"')
    yield url_for(postgres_server, name)
    admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dotenv_in_the_current_folder_names_the_database(tmp_path: Path, database_url: str) -> None:
    write_app(tmp_path, flow="DotEnvFlow")
    (tmp_path / ".env").write_text(f"COCOINDEX_DATABASE_URL={database_url}\n")
    state_dir = tmp_path / "state"  # where an embedded server would go if .env were ignored
    result = run_cli(
        ["update", "-f", "main.py"], tmp_path, clean_env(COCOD_STATE_DIR=str(state_dir))
    )
    assert result.returncode == 0, result.stderr
    assert f"Loaded environment variables from: {tmp_path / '.env'}" in result.stderr
    assert "embedded" not in result.stderr
    assert table_rows(database_url, "dotenvflow__counts") == ROWS
    assert not (state_dir / "pgdata").exists()


def test_env_file_option_wins_over_the_current_folder(
    tmp_path: Path, database_url: str, second_database: str
) -> None:
    write_app(tmp_path, flow="EnvFileFlow")
    (tmp_path / ".env").write_text(f"COCOINDEX_DATABASE_URL={second_database}\n")
    (tmp_path / "prod.env").write_text(f"export COCOINDEX_DATABASE_URL='{database_url}'\n")
    result = run_cli(["-e", "prod.env", "update", "-f", "main.py"], tmp_path, clean_env())
    assert result.returncode == 0, result.stderr
    assert table_rows(database_url, "envfileflow__counts") == ROWS
    assert table_rows(second_database, "envfileflow__counts") is None


def test_a_missing_env_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli(["-e", "nope.env", "update", "main.py"], tmp_path, clean_env())
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.env" in lines[0] and "Traceback" not in result.stderr


def test_settings_function_decides_the_database_under_the_cli(
    tmp_path: Path, database_url: str, second_database: str
) -> None:
    write_app(tmp_path, flow="SettingsFlow", settings_url=second_database)
    # The environment names another database: the app's settings function wins, as in v0.
    env = clean_env(COCOINDEX_DATABASE_URL=database_url)
    result = run_cli(["update", "-f", "main.py"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert table_rows(second_database, "settingsflow__counts") == ROWS
    assert table_rows(database_url, "settingsflow__counts") is None
    listed = run_cli(["ls", "main.py"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "SettingsFlow"  # set up, in the settings' database


def test_quiet_update_prints_nothing_and_setup_flag_gets_v0_note(
    tmp_path: Path, database_url: str
) -> None:
    write_app(tmp_path, flow="QuietFlow")
    env = clean_env(COCOINDEX_DATABASE_URL=database_url)
    quiet = run_cli(["update", "-f", "-q", "main.py"], tmp_path, env)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert table_rows(database_url, "quietflow__counts") == ROWS
    noisy = run_cli(["update", "--setup", "main.py"], tmp_path, env)
    assert noisy.returncode == 0, noisy.stderr
    assert "The --setup flag is deprecated" in noisy.stderr
    assert "Setup is already up to date." in noisy.stdout


def test_no_database_url_says_it_uses_the_embedded_server(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    # Attach to the test session's embedded server (same state dir) instead of starting one.
    state_dir = postgres_server.data_dir.parent
    write_app(tmp_path, flow=f"EmbeddedNotice{os.getpid()}")
    env = clean_env(COCOD_STATE_DIR=str(state_dir))
    try:
        result = run_cli(["setup", "-f", "main.py"], tmp_path, env)
        assert result.returncode == 0, result.stderr
        notices = [line for line in result.stderr.splitlines() if "embedded" in line]
        assert len(notices) == 1
        assert str(postgres_server.data_dir) in notices[0]
    finally:
        dropped = run_cli(["drop", "-f", "main.py"], tmp_path, env)
        assert dropped.returncode == 0, dropped.stderr
