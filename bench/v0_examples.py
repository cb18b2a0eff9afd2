"""CocoIndex v0's own examples run on cocod with only the import line changed: a repeatable check.

Not a test (it reads ``../shared``, which a clone does not have): run it by hand or from
CI where that folder exists, ``.venv/bin/python bench/v0_examples.py``. For each of
custom_output_files, text_embedding and code_embedding it

1. copies the example to a temporary directory and changes only its import lines
   (``import cocoindex`` → ``import cocod as cocoindex``, ``from cocoindex…`` →
   ``from cocod…``), checking that nothing else differs;
2. adds the data the copy in ``../shared`` leaves out (text_embedding's ``markdown_files/``,
   a small code tree for code_embedding's ``../..``): data, not code;
3. runs what its README says, the shortest way: ``cocod update main`` (with ``-f``: the
   first update asks to confirm its setup, as v0's does, and no one is at a terminal
   here to answer yes), then ``python main.py`` with one query and then the loop's own
   "Enter to quit" (an empty line; at EOF ``input()`` raises, in v0 too);
4. checks what landed: rows in the example's table, the query's output, and for
   custom_output_files the HTML files with markdown-it's rendering of each source file
   (and a deleted source's file removed by the next update).

Each example's ``.env`` names ``postgres://cocoindex:cocoindex@localhost/cocoindex``; when
that database cannot be reached here, the example runs with ``COCOINDEX_DATABASE_URL``
pointing at an embedded server this script starts (a fresh database per example), and the
script says so. It prints one line per example: ``ok`` or ``failed`` with the reason, and
exits 1 when one failed. It takes about a minute on an idle 2-core machine (each example
process imports torch and loads all-MiniLM-L6-v2; 3m46s measured on a loaded one).
The examples need their own dependencies: ``markdown-it-py[linkify,plugins]``
(custom_output_files), ``psycopg[binary,pool]`` and ``pgvector`` (text_embedding,
code_embedding); a missing one fails that example with the pip command to run.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXAMPLES = ROOT.parent / "shared" / "reference" / "v0-examples"
EXAMPLES = ("custom_output_files", "text_embedding", "code_embedding")
STEP_TIMEOUT_S = 300.0
"""The most one command of an example may take (a model load and a few embeddings)."""

_IMPORT = re.compile(r"^(\s*)import cocoindex(\s*(#.*)?)$")
_IMPORT_SUB = re.compile(r"^(\s*)import cocoindex\.")
_FROM = re.compile(r"^(\s*)from cocoindex(\.|\s)")


class ExampleFailed(Exception):
    """One example did not run as v0 runs it; the message says which step and why."""


def change_import_lines(source: str) -> tuple[str, int]:
    """The source with its cocoindex imports pointed at cocod, and how many lines changed."""
    out: list[str] = []
    changed = 0
    for line in source.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        new = _IMPORT.sub(r"\1import cocod as cocoindex\2", body)
        new = _IMPORT_SUB.sub(r"\1import cocod.", new)
        new = _FROM.sub(r"\1from cocod\2", new)
        changed += new != body
        out.append(new + ending)
    return "".join(out), changed


def _only_imports_differ(before: str, after: str) -> None:
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        if "cocoindex" not in line and "cocod" not in line:
            raise ExampleFailed(f"the import rewrite changed a non-import line: {line!r}")


# -- the database ------------------------------------------------------------------------
def _can_connect(url: str) -> bool:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
        return True
    except Exception:
        return False


def _env_url(example_dir: Path) -> str | None:
    env = example_dir / ".env"
    if not env.is_file():
        return None
    for line in env.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "COCOINDEX_DATABASE_URL":
            return value.strip().strip("'\"")
    return None


class Databases:
    """A fresh database per example on one embedded server, started on first need."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._server: object | None = None
        self._admin_url = ""

    def fresh(self, name: str) -> str:
        import asyncpg

        if self._server is None:
            sys.path.insert(0, str(ROOT))
            from cocod.storage.embedded import start_embedded_postgres

            server = start_embedded_postgres(self.state_dir)
            self._server = server
            self._admin_url = server.uri

        async def create() -> None:
            conn = await asyncpg.connect(self._admin_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        base, _, query = self._admin_url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}?{query}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]


def _fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _table_ending(url: str, suffix: str) -> str:
    rows = _fetch(
        url,
        "SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = 'public' AND table_name LIKE '%{suffix}'",
    )
    if len(rows) != 1:
        raise ExampleFailed(f"expected one table named *{suffix}, found {[r[0] for r in rows]}")
    return str(rows[0][0])


# -- running -----------------------------------------------------------------------------
@dataclass
class Run:
    workdir: Path
    env: dict[str, str]

    def __call__(self, what: str, argv: list[str], stdin: str = "") -> str:
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv,
                cwd=self.workdir,
                env=self.env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as e:
            raise ExampleFailed(f"`{what}` ran past {STEP_TIMEOUT_S:.0f} s") from e
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
            raise ExampleFailed(f"`{what}` exited {done.returncode}: {' | '.join(tail)}")
        print(f"    {what}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        return done.stdout


def _cocod() -> list[str]:
    script = Path(sys.executable).with_name("cocod")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cocod.cli.main"]


def _needs(*modules: str, pip: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExampleFailed(f"missing {', '.join(missing)}: run `.venv/bin/pip install {pip}`")


def check_custom_output_files(run: Run, url: str) -> str:
    _needs("markdown_it", "mdit_py_plugins", "linkify_it", pip="'markdown-it-py[linkify,plugins]'")
    from markdown_it import MarkdownIt

    run("cocod update -f main", [*_cocod(), "update", "-f", "main"])
    render = MarkdownIt("gfm-like").render
    sources = sorted((run.workdir / "data").glob("*.md"))
    out = run.workdir / "output_html"
    for source in sources:
        html = out / f"{source.name}.html"
        if not html.is_file():
            raise ExampleFailed(f"{html.relative_to(run.workdir)} was not written")
        if html.read_text() != render(source.read_text()):
            raise ExampleFailed(f"{html.name} differs from markdown-it's rendering")
    # Incremental: a deleted source's file goes on the next update.
    gone = sources[0]
    gone.unlink()
    run("cocod update main (after a delete)", [*_cocod(), "update", "main"])  # no setup
    if (out / f"{gone.name}.html").exists():
        raise ExampleFailed(f"{gone.name}.html stayed after its source was deleted")
    return f"{len(sources)} HTML files as markdown-it renders them; a deleted one removed"


def _check_query_example(
    run: Run, url: str, table_suffix: str, query: str, expect_in_output: str
) -> str:
    _needs("psycopg", "psycopg_pool", "pgvector", pip="'psycopg[binary,pool]' pgvector")
    run("cocod update -f main", [*_cocod(), "update", "-f", "main"])
    table = _table_ending(url, table_suffix)
    ((rows, files),) = _fetch(url, f"SELECT count(*), count(DISTINCT filename) FROM {table}")
    if not rows:
        raise ExampleFailed(f"`cocod update -f main` left {table} empty")
    output = run("python main.py", [sys.executable, "main.py"], stdin=f"{query}\n\n")
    if "Search results:" not in output or expect_in_output not in output:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ExampleFailed(f"the query printed no result naming {expect_in_output}: {tail}")
    return f"{rows} rows from {files} files in {table}; the query found {expect_in_output}"


def check_text_embedding(run: Run, url: str) -> str:
    docs = run.workdir / "markdown_files"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "flow-instances.md", docs / "flow-instances.md")
    return _check_query_example(
        run, url, "doc_embeddings", "expired flows are never closed", "flow-instances.md"
    )


def check_code_embedding(run: Run, url: str) -> str:
    # The flow indexes "../.." of the example: give it a small code tree there.
    tree = run.workdir.parent.parent
    for name in ("flow_instances.py", "flow_instances_entry.py"):
        shutil.copy(ROOT / "cocod" / name, tree / name)
    return _check_query_example(
        run, url, "code_embeddings", "close flows when idle or evicted", "flow_instances"
    )


CHECKS: dict[str, Callable[[Run, str], str]] = {
    "custom_output_files": check_custom_output_files,
    "text_embedding": check_text_embedding,
    "code_embedding": check_code_embedding,
}


def run_example(name: str, source: Path, scratch: Path, databases: Databases) -> str:
    """Copy, rewrite the imports, run, check; returns what was shown (raises ExampleFailed)."""
    workdir = scratch / name / "examples" / name  # code_embedding reads ../..
    shutil.copytree(source, workdir)
    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the reference copy is read-only
    changed = 0
    for py in workdir.rglob("*.py"):
        before = py.read_text()
        after, n = change_import_lines(before)
        _only_imports_differ(before, after)
        py.write_text(after)
        changed += n
    notes = [f"{changed} import line{'s' if changed != 1 else ''} changed"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "COCOD_SOCKET": str(scratch / "no-daemon.sock"),  # never a user's daemon
        "COCOD_STATE_DIR": str(scratch / name / "state"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("COCOD_DATABASE_URL", None)
    named = _env_url(workdir)
    if named is not None and _can_connect(named):
        url = named
    else:
        url = databases.fresh(f"v0_{name}")
        env["COCOINDEX_DATABASE_URL"] = url
        notes.append(
            f"its .env's database ({named}) is not reachable here: COCOINDEX_DATABASE_URL "
            "points at this script's embedded server"
        )
    shown = CHECKS[name](Run(workdir, env), url)
    return "; ".join([shown, *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=Path, default=DEFAULT_EXAMPLES)
    parser.add_argument("--only", choices=EXAMPLES, action="append")
    args = parser.parse_args(argv)
    if not args.examples.is_dir():
        print(f"skipped: {args.examples} is absent (the v0 examples live in ../shared)")
        return 0
    failures = 0
    with tempfile.TemporaryDirectory(prefix="cocod-v0-examples-") as tmp:
        scratch = Path(tmp)
        databases = Databases(scratch / "embedded")
        try:
            for name in args.only or EXAMPLES:
                source = args.examples / name
                try:
                    if not source.is_dir():
                        raise ExampleFailed(f"{source} is absent")
                    print(f"{name}: ok ({run_example(name, source, scratch, databases)})")
                except ExampleFailed as e:
                    failures += 1
                    print(f"{name}: failed ({e})")
                sys.stdout.flush()
        finally:
            databases.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
