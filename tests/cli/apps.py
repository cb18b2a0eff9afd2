"""A v0-style app written to disk and the real ``cocod`` CLI run on it in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from cocod.storage.embedded import EmbeddedPostgres

COCOD = str(Path(sys.executable).with_name("cocod"))

APP_TEMPLATE = """
import cocod as cocoindex
{settings}

@cocoindex.op.function()
def word_count(content: str) -> int:
    return len(content.split())


@cocoindex.flow_def(name="{flow}")
def words_flow(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
    data_scope["documents"] = flow_builder.add_source(
        cocoindex.sources.LocalFile(path={docs!r})
    )
    out = data_scope.add_collector()
    with data_scope["documents"].row() as doc:
        doc["words"] = doc["content"].transform(word_count)
        out.collect(filename=doc["filename"], words=doc["words"])
    out.export("counts", cocoindex.targets.Postgres(), primary_key_fields=["filename"])
"""

SETTINGS_TEMPLATE = """

@cocoindex.settings
def cocoindex_settings() -> cocoindex.Settings:
    return cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url={url!r}))
"""


def write_app(
    folder: Path, *, flow: str, name: str = "main.py", settings_url: str | None = None
) -> Path:
    """``folder/name``: one flow counting the words of ``folder/docs/*`` (two files)."""
    docs = folder / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "a.md").write_text("one two three")
    (docs / "b.md").write_text("four five")
    settings = SETTINGS_TEMPLATE.format(url=settings_url) if settings_url else ""
    app = folder / name
    app.write_text(APP_TEMPLATE.format(settings=settings, flow=flow, docs=str(docs)))
    return app


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any database or state settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COCOD_", "COCOINDEX_", "PG"))}
    env.update(extra)
    return env


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COCOD, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def run_script(
    script: Path, env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def imported_modules(stderr: str) -> set[str]:
    """The modules named in Python's import-time log (``PYTHONPROFILEIMPORTTIME=1``)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def url_for(server: EmbeddedPostgres, database: str) -> str:
    base, _, query = server.uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{database}?{query}"


def admin(server: EmbeddedPostgres, sql: str, database: str = "postgres") -> object:
    async def run() -> object:
        conn = await asyncpg.connect(url_for(server, database))
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def table_rows(url: str, table: str) -> list[tuple[object, ...]] | None:
    """The table's rows sorted, or None when the table does not exist in that database."""

    async def run() -> list[tuple[object, ...]] | None:
        conn = await asyncpg.connect(url)
        try:
            if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                return None
            return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        finally:
            await conn.close()

    return asyncio.run(run())
