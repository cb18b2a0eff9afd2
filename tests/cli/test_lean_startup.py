"""Library commands start without rich: structlog would import it (and pygments) for
pretty tracebacks cocod never uses, 50-100 ms of every `cocod update` process.

The real console script runs a real `update` with Python's import log; the helper itself
runs in fresh interpreters, with and without rich already loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.apps import clean_env, imported_modules, run_cli, table_rows, write_app


def _python(code: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """What ``code`` prints, run in a fresh interpreter (which must exit 0)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_update_runs_without_importing_rich(tmp_path: Path, database_url: str) -> None:
    write_app(tmp_path, flow="LeanStart")
    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url,
        COCOD_SOCKET=str(tmp_path / "no-daemon.sock"),
        PYTHONPROFILEIMPORTTIME="1",
    )
    result = run_cli(["update", "-f", "-q", "main"], tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert table_rows(database_url, "leanstart__counts") == [("a.md", 3), ("b.md", 2)]
    imported = imported_modules(result.stderr)
    assert "structlog.dev" in imported  # the logging it needs is there
    # The log also lists a failed `import rich` (hidden), as it lists colorama when absent;
    # what costs is rich's modules and pygments, and none of them may load.
    assert not {m for m in imported if m.startswith(("rich.", "pygments"))}


def test_rich_stays_importable_and_structlog_works_after_the_lean_import() -> None:
    out = _python(
        "import sys\n"
        "from cocod.cli.main import import_structlog_without_rich\n"
        "import_structlog_without_rich()\n"
        "assert 'structlog' in sys.modules and 'rich' not in sys.modules\n"
        "import structlog\n"
        "structlog.dev.ConsoleRenderer(colors=False)\n"
        "from rich.console import Console\n"
        "print(Console.__name__)\n"
    )
    assert out == "Console"


def test_a_process_that_already_has_rich_keeps_structlogs_pretty_tracebacks() -> None:
    out = _python(
        "import rich\n"
        "from cocod.cli.main import import_structlog_without_rich\n"
        "import_structlog_without_rich()\n"
        "import structlog.dev\n"
        "print(structlog.dev.rich is not None)\n"
    )
    assert out == "True"


def test_a_library_command_freezes_what_it_imported_before_running(
    tmp_path: Path, database_url: str
) -> None:
    write_app(tmp_path, flow="FrozenStart")
    code = (
        "import gc, sys\n"
        "from cocod.cli.main import main\n"
        "status = main(['update', '-f', '-q', 'main'])\n"
        "print(status, gc.get_freeze_count() > 1000)\n"
    )
    env = clean_env(
        COCOINDEX_DATABASE_URL=database_url, COCOD_SOCKET=str(tmp_path / "no-daemon.sock")
    )
    assert _python(code, cwd=tmp_path, env=env).split() == ["0", "True"]
    assert table_rows(database_url, "frozenstart__counts") == [("a.md", 3), ("b.md", 2)]
