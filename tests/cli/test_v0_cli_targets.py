"""``cocod update main`` (v0's READMEs) against daemon instance names, and ``ls`` without a
target: the real CLI, and for the conflict a real daemon with an instance named ``main``."""

from __future__ import annotations

from pathlib import Path

import cocod as cocoindex
from tests.cli.apps import clean_env, run_cli, table_rows, write_app
from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.flows import paragraph_flow

ROWS = [("a.md", 3), ("b.md", 2)]


def test_bare_module_name_runs_the_app_when_no_daemon_has_it(
    tmp_path: Path, database_url: str
) -> None:
    write_app(tmp_path, flow="BareName")
    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(tmp_path / "no-daemon.sock")
    )
    result = run_cli(["update", "-f", "main"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "BareName.documents (batch update)" in result.stdout
    assert table_rows(database_url, "barename__counts") == ROWS
    # A bare name with no app of that name here still means a daemon instance.
    other = run_cli(["update", "docs"], tmp_path, env)
    assert other.returncode == 3, other.stderr
    assert "no cocod daemon answers" in other.stderr


def test_app_dir_option_finds_the_bare_module(tmp_path: Path, database_url: str) -> None:
    app_dir = tmp_path / "app"
    write_app(app_dir, flow="AppDirFlow")
    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(tmp_path / "no-daemon.sock")
    )
    result = run_cli(["-d", str(app_dir), "update", "-f", "-q", "main"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert table_rows(database_url, "appdirflow__counts") == ROWS


def test_a_name_that_is_both_app_and_instance_asks_which(tmp_path: Path, database_url: str) -> None:
    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    (daemon_dir / "docs").mkdir()
    (daemon_dir / "docs" / "x.md").write_text("daemon paragraph")
    config = instance("main", daemon_dir / "docs", "main_rows", live=False)
    daemon = DaemonProcess(daemon_dir, database_url, config).start()
    try:
        app_dir = tmp_path / "app"
        write_app(app_dir, flow="BothFlow")
        env = clean_env(COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(daemon.socket))
        eventually(
            lambda: run_cli(["ls"], app_dir, env).stdout.count("main") == 1,
            "the daemon to list its instance",
        )
        ambiguous = run_cli(["update", "main"], app_dir, env)
        assert ambiguous.returncode == 2
        lines = ambiguous.stderr.strip().splitlines()
        assert len(lines) == 1, ambiguous.stderr
        assert "`cocod update ./main.py`" in lines[0]
        assert "`cocod update --instance main`" in lines[0]
        assert table_rows(database_url, "bothflow__counts") is None

        as_app = run_cli(["update", "-f", "-q", "./main.py"], app_dir, env)
        assert as_app.returncode == 0, as_app.stderr
        assert table_rows(database_url, "bothflow__counts") == ROWS

        as_instance = run_cli(["update", "--instance", "main"], app_dir, env)
        assert as_instance.returncode == 0, as_instance.stderr
        assert table_rows(database_url, "main_rows") is not None
    finally:
        daemon.stop(timeout=15)


def test_ls_without_target_lists_the_current_namespace(tmp_path: Path, database_url: str) -> None:
    # Two flows set up in-process, one in the namespace "team"; the CLI then lists them.
    docs = str(tmp_path / "docs")
    write(tmp_path / "docs" / "a.md", "text")
    for namespace, name in (("", "PlainFlow"), ("team", "SpacedFlow")):
        spec = cocoindex.DatabaseConnectionSpec(url=database_url)
        cocoindex.init(cocoindex.Settings(database=spec, app_namespace=namespace))
        flow = cocoindex.open_flow(name, paragraph_flow(docs))
        flow.setup()
        flow.close()
    cocoindex.stop()

    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(tmp_path / "no-daemon.sock")
    )
    plain = run_cli(["ls"], tmp_path, env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == ["PlainFlow"]
    in_team = run_cli(["ls"], tmp_path, {**env, "COCOINDEX_APP_NAMESPACE": "team"})
    assert in_team.returncode == 0, in_team.stderr
    assert in_team.stdout.splitlines() == ["SpacedFlow"]
