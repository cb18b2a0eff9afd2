"""``cocod setup`` finishes an interrupted initial load: it builds the vector indexes the
load deferred and removes their marker, without asking (nothing the user must approve
changes), even though the flow's setup has no changes.

The load runs in this process and is cancelled between its DROP and its build (as
tests/engine/test_initial_load_indexes.py does); the real CLI then runs in a subprocess
on an app defining the same flow, with stdin not a terminal and no ``-f``: a prompt
would make it fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.apps import clean_env, run_cli, table_rows, write_app
from tests.conftest import SqlHelper
from tests.engine.test_initial_load_indexes import (
    GATE,
    GATE_FILE_ENV,
    REPO,
    TABLE,
    _interrupted,
    markers,
    vector_index_oid,
)

FLOW = "CliSetupRepairs"

APP = """
import cocod
from tests.engine.test_initial_load_indexes import loaded_flow

cocod.flow_def(name={flow!r})(loaded_flow({docs!r}))
"""


@pytest.fixture(autouse=True)
def gate() -> Iterator[None]:
    """The gated row holds the load open until the test cancels it."""
    GATE.clear()
    yield
    GATE.set()  # never leave a worker thread waiting


def test_cli_setup_builds_what_an_interrupted_load_left(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    flow = _interrupted(tmp_path, FLOW, cocod_db)
    flow.close()
    assert vector_index_oid(sql) is None
    assert markers(sql) == [f"deferred_indexes:Postgres:.{TABLE}"]
    env = _app_env(tmp_path, cocod_db)

    result = run_cli(["setup", "./main.py"], tmp_path, env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Continue?" not in result.stdout + result.stderr  # no prompt
    assert "Setup is already up to date." not in result.stdout
    assert f"Built the deferred vector indexes of flow {FLOW}" in result.stdout
    assert "No setup changes to apply." not in result.stdout  # it did apply something
    assert vector_index_oid(sql) is not None
    assert markers(sql) == []

    again = run_cli(["setup", "./main.py"], tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Setup is already up to date." in again.stdout


def _app_env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    """``tmp_path/main.py`` defining FLOW over ``tmp_path/docs``, and the CLI's environment
    for it (no daemon; the tests' helpers importable by the app)."""
    (tmp_path / "main.py").write_text(APP.format(flow=FLOW, docs=str(tmp_path / "docs")))
    return clean_env(
        COCOINDEX_DATABASE_URL=url,
        COCOD_SOCKET=str(tmp_path / "no-daemon.sock"),
        PYTHONPATH=str(REPO),
        **extra,
    )


def test_cli_setup_still_asks_before_real_changes(tmp_path: Path, database_url: str) -> None:
    """The counterpart: a flow with changes (a new table) is not set up without a yes, and
    a non-terminal stdin is told to pass -f."""
    write_app(tmp_path, flow="AsksFirst")
    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(tmp_path / "no-daemon.sock")
    )

    result = run_cli(["setup", "./main.py"], tmp_path, env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Not a terminal: pass -f/--force to apply." in result.stderr
    assert table_rows(database_url, "asksfirst__counts") is None
    forced = run_cli(["setup", "-f", "./main.py"], tmp_path, env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert table_rows(database_url, "asksfirst__counts") == []


def test_cli_update_leaves_the_build_to_its_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """``cocod update``'s setup step does not build what an interrupted load deferred: the
    pass that follows loads the rest of the rows without the index and builds it at its
    end (a build in the setup step would run before the rest of the load)."""
    flow = _interrupted(tmp_path, FLOW, cocod_db)
    flow.close()
    (tmp_path / "gate-open").touch()  # the gated row goes through in the subprocess
    env = _app_env(tmp_path, cocod_db, **{GATE_FILE_ENV: str(tmp_path / "gate-open")})

    result = run_cli(["update", "./main.py"], tmp_path, env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Built the deferred vector indexes" not in result.stdout
    assert "Setup is already up to date." in result.stdout
    assert "0 errors" in result.stdout or "errors" not in result.stdout, result.stdout
    assert vector_index_oid(sql) is not None
    assert markers(sql) == []
