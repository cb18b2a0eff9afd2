"""A v0 app with a custom target (the shape of v0's examples/custom_output_files) runs under
the ``cocod`` CLI: files appear, an edit rewrites one, a delete removes one, drop tears the
directory down, and a crash between ``mutate`` and the commit loses nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.cli.apps import clean_env, run_cli

APP = """
import dataclasses
import os
import signal

import cocod as cocoindex


class MarkdownDir(cocoindex.op.TargetSpec):
    directory: str


@dataclasses.dataclass
class Page:
    html: str


@cocoindex.op.target_connector(spec_cls=MarkdownDir)
class MarkdownDirConnector:
    @staticmethod
    def get_persistent_key(spec: MarkdownDir, target_name: str) -> str:
        return spec.directory

    @staticmethod
    def describe(key: str) -> str:
        return f"Page directory {key}"

    @staticmethod
    def apply_setup_change(
        key: str, previous: MarkdownDir | None, current: MarkdownDir | None
    ) -> None:
        if previous is None and current is not None:
            os.makedirs(current.directory, exist_ok=True)
        if previous is not None and current is None and os.path.isdir(previous.directory):
            for name in os.listdir(previous.directory):
                os.remove(os.path.join(previous.directory, name))
            os.rmdir(previous.directory)

    @staticmethod
    def prepare(spec: MarkdownDir) -> MarkdownDir:
        return spec

    @staticmethod
    def mutate(*all_mutations: tuple[MarkdownDir, dict[str, Page | None]]) -> None:
        for spec, mutations in all_mutations:
            for filename, page in mutations.items():
                path = os.path.join(spec.directory, filename) + ".html"
                if page is None:
                    try:
                        os.remove(path)
                    except FileNotFoundError:
                        pass
                else:
                    with open(path, "w") as f:
                        f.write(page.html)
                    with open("mutations.log", "a") as log:
                        log.write(filename + "\\n")
        if os.path.exists("crash-after-mutate"):
            os.remove("crash-after-mutate")
            os.kill(os.getpid(), signal.SIGKILL)  # after mutate, before the commit


@cocoindex.op.function()
def to_html(text: str) -> str:
    return "<pre>" + text + "</pre>"


@cocoindex.flow_def(name="CustomPages")
def custom_pages(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
    data_scope["documents"] = flow_builder.add_source(
        cocoindex.sources.LocalFile(path="data", included_patterns=["*.md"])
    )
    pages = data_scope.add_collector()
    with data_scope["documents"].row() as doc:
        doc["html"] = doc["content"].transform(to_html)
        pages.collect(filename=doc["filename"], html=doc["html"])
    pages.export(
        "OutputHtml", MarkdownDir(directory="output_html"), primary_key_fields=["filename"]
    )
"""


def _cocod(tmp_path: Path, database_url: str, *args: str) -> str:
    result = run_cli(list(args), tmp_path, clean_env(COCOINDEX_DATABASE_URL=database_url))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_v0_custom_target_app_under_the_cli(tmp_path: Path, database_url: str) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(APP))
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.md").write_text("alpha")
    (data / "b.md").write_text("beta")
    out = tmp_path / "output_html"

    printed = _cocod(tmp_path, database_url, "update", "-f", "main.py")
    assert "Page directory output_html" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a.md.html", "b.md.html"]
    assert (out / "a.md.html").read_text() == "<pre>alpha</pre>"

    # An edit rewrites that file only; a deleted source file's output goes.
    (data / "a.md").write_text("alpha, edited")
    (data / "b.md").unlink()
    (tmp_path / "mutations.log").unlink()
    _cocod(tmp_path, database_url, "update", "main.py")
    assert sorted(p.name for p in out.iterdir()) == ["a.md.html"]
    assert (out / "a.md.html").read_text() == "<pre>alpha, edited</pre>"
    assert (tmp_path / "mutations.log").read_text().split() == ["a.md"]

    # Killed after mutate, before the commit: the next update writes the row again.
    (data / "c.md").write_text("gamma")
    (tmp_path / "crash-after-mutate").touch()
    crashed = run_cli(
        ["update", "main.py"], tmp_path, clean_env(COCOINDEX_DATABASE_URL=database_url)
    )
    assert crashed.returncode != 0
    assert (out / "c.md.html").exists()
    (out / "c.md.html").unlink()  # as if mutate's effect had been lost with the process
    _cocod(tmp_path, database_url, "update", "main.py")
    assert (out / "c.md.html").read_text() == "<pre>gamma</pre>"
    assert (tmp_path / "mutations.log").read_text().split() == ["a.md", "c.md", "c.md"]

    _cocod(tmp_path, database_url, "drop", "-f", "main.py")
    assert not out.exists()
