"""``@cocoindex.settings`` in plain scripts: the function decides the database, whatever the
script imported or touched first (each case a real subprocess: the decorator is global)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocod.storage.embedded import EmbeddedPostgres
from tests.cli.apps import admin, clean_env, run_script, table_rows, url_for, write_app

ROWS = [("a.md", 3), ("b.md", 2)]


@pytest.fixture
def second_database(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"settings_{os.getpid()}_{id(object())}"
    admin(postgres_server, f'CREATE DATABASE "{name}"')
    yield url_for(postgres_server, name)
    admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _script(tmp_path: Path, flow: str, settings_url: str, prologue: str, epilogue: str) -> Path:
    """The app module plus a prologue run before it and an epilogue run after it."""
    app = write_app(tmp_path, flow=flow, settings_url=settings_url, name="app_module.py")
    body = app.read_text()
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(prologue) + "\n" + body + "\n" + textwrap.dedent(epilogue))
    return script


UPDATE = """
words_flow.setup()
info = words_flow.update()
print("inserted", info.stats["documents"]["num_insertions"])
"""


@pytest.mark.parametrize(
    "prologue",
    [
        # the v0 module path imported before the package's decorator name
        "import cocod.setting\nfrom cocod.setting import Settings\n",
        # the library touched (its context built from the environment) before the app
        "import cocod\nassert cocod.get_app_namespace() == ''\n",
        # the runtime module imported directly first
        "import cocod.runtime.context\nimport cocod.runtime.flow\n",
    ],
    ids=["setting-module-first", "library-touched-first", "runtime-first"],
)
def test_settings_function_names_the_database_in_a_script(
    tmp_path: Path, database_url: str, second_database: str, prologue: str
) -> None:
    flow = "ScriptSettings"
    script = _script(tmp_path, flow, second_database, prologue, UPDATE)
    result = run_script(script, clean_env(COCOINDEX_DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    assert "inserted 2" in result.stdout
    assert table_rows(second_database, "scriptsettings__counts") == ROWS
    assert table_rows(database_url, "scriptsettings__counts") is None


def test_init_without_arguments_and_the_called_form_use_the_function(
    tmp_path: Path, database_url: str, second_database: str
) -> None:
    flow = "InitSettings"
    script = _script(
        tmp_path,
        flow,
        second_database,
        "",
        f"""
        import warnings
        import cocod as cocoindex

        @cocoindex.settings()
        def again() -> cocoindex.Settings:
            return cocoindex.Settings(
                database=cocoindex.DatabaseConnectionSpec(url={second_database!r}),
                app_namespace="ns",
            )

        cocoindex.init()
        assert cocoindex.get_app_namespace() == "ns"
        {UPDATE.strip().replace(chr(10), chr(10) + "        ")}
        """,
    )
    result = run_script(script, clean_env(COCOINDEX_DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    assert "a second @cocod.settings function" in result.stderr  # v0 warns too
    assert table_rows(second_database, "ns__initsettings__counts") == ROWS


def test_a_settings_function_returning_something_else_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        textwrap.dedent(
            """
            import cocod as cocoindex
            from cocod.errors import SettingsError

            @cocoindex.settings
            def broken():
                return {"database": "postgresql://x"}

            try:
                cocoindex.init()
            except SettingsError as e:
                print("error:", e)
            """
        )
    )
    result = run_script(script, clean_env())
    assert result.returncode == 0, result.stderr
    assert "error: the @cocod.settings function" in result.stdout
    assert "returned dict; it must return a cocod.Settings" in result.stdout
