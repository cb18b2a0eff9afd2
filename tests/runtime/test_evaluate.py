"""``Flow.evaluate_and_dump`` and ``cocod evaluate``: one YAML file per source row, named and
laid out as v0's dumper writes them; targets, tracking and the memo are never written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import cocod as cocoindex
from cocod.errors import SetupOutOfDateError
from cocod.runtime.evaluate import EvaluateAndDumpOptions, file_prefixes
from tests.cli.apps import clean_env, run_cli, write_app
from tests.conftest import SqlHelper, write
from tests.flows import EMBED_CALLS, paragraph_flow, tiny_vector


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Title\n\nSecond paragraph,\nover two lines.")
    write(docs / "sub" / "b c.md", "Only one.")
    return docs


def test_evaluate_dumps_each_row_and_writes_nothing(tmp_path: Path, sql: SqlHelper) -> None:
    docs = _docs(tmp_path)
    flow = cocoindex.open_flow("Evaluated", paragraph_flow(str(docs)))
    flow.setup()
    flow.update()
    tracking_before = sql.fetch("SELECT * FROM cocod.tracking ORDER BY 1, 2")
    write(docs / "a.md", "Changed since the update.")  # evaluate sees it; the table must not

    out = tmp_path / "out"
    flow.evaluate_and_dump(EvaluateAndDumpOptions(output_dir=str(out), use_cache=True))
    assert sorted(p.name for p in out.iterdir()) == [
        "documents@a.md.yaml",
        "documents@sub%2Fb%20c.md.yaml",
    ]
    a = _load(out / "documents@a.md.yaml")
    assert list(a) == ["key", "exports"]
    assert a["key"] == {"filename": "a.md"}
    (row,) = a["exports"]["paragraphs"]
    assert list(row) == ["filename", "index", "text", "embedding"]
    assert (row["filename"], row["index"], row["text"]) == ("a.md", 0, "Changed since the update.")
    assert row["embedding"] == pytest.approx(tiny_vector("Changed since the update.").tolist())
    b = _load(out / "documents@sub%2Fb%20c.md.yaml")
    assert b["key"] == {"filename": "sub/b c.md"}

    # Nothing persisted: the target keeps the updated rows, tracking is byte for byte the same.
    texts = [r["text"] for r in sql.fetch("SELECT text FROM evaluated__paragraphs ORDER BY 1")]
    assert texts == ["# Title", "Only one.", "Second paragraph,\nover two lines."]
    assert sql.fetch("SELECT * FROM cocod.tracking ORDER BY 1, 2") == tracking_before


def test_rows_are_sorted_by_key_and_multiline_text_is_a_block(
    tmp_path: Path, cocod_db: str
) -> None:
    docs = _docs(tmp_path)
    flow = cocoindex.open_flow("Blocks", paragraph_flow(str(docs)))
    out = tmp_path / "out"
    flow.evaluate_and_dump(EvaluateAndDumpOptions(output_dir=str(out), use_cache=False))
    text = (out / "documents@a.md.yaml").read_text()
    # v0's layout: block text, double quotes where plain text will not do.
    assert '      text: "# Title"\n' in text
    assert "      text: |-\n        Second paragraph,\n        over two lines.\n" in text
    rows = _load(out / "documents@a.md.yaml")["exports"]["paragraphs"]
    assert [r["index"] for r in rows] == [0, 1]


def test_cache_is_read_only_when_asked_and_needs_current_setup(
    tmp_path: Path, cocod_db: str
) -> None:
    docs = _docs(tmp_path)
    flow = cocoindex.open_flow("Cached", paragraph_flow(str(docs)))
    with pytest.raises(SetupOutOfDateError):
        flow.evaluate_and_dump(EvaluateAndDumpOptions(output_dir=str(tmp_path / "o1")))
    before = len(EMBED_CALLS)
    flow.evaluate_and_dump(EvaluateAndDumpOptions(str(tmp_path / "o2"), use_cache=False))
    assert len(EMBED_CALLS) - before == 3  # computed: no setup and no database needed
    flow.setup()
    flow.update()
    before = len(EMBED_CALLS)
    flow.evaluate_and_dump(EvaluateAndDumpOptions(str(tmp_path / "o3"), use_cache=True))
    assert len(EMBED_CALLS) == before  # every embedding came from the cache
    flow.evaluate_and_dump(EvaluateAndDumpOptions(str(tmp_path / "o4"), use_cache=False))
    assert len(EMBED_CALLS) - before == 3
    assert (tmp_path / "o3" / "documents@a.md.yaml").read_text() == (
        tmp_path / "o4" / "documents@a.md.yaml"
    ).read_text()


@cocoindex.op.function()
def refuse_secrets(text: str) -> str:
    if "secret" in text:
        raise ValueError("this row holds a secret")
    return text.upper()


def _refusing_flow(source: str) -> Any:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["loud"] = doc["content"].transform(refuse_secrets)
            out.collect(filename=doc["filename"], loud=doc["loud"])
        out.export("loud", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_a_failing_row_gets_an_error_entry(tmp_path: Path, cocod_db: str) -> None:
    write(tmp_path / "docs" / "ok.txt", "fine")
    write(tmp_path / "docs" / "bad.txt", "a secret")
    flow = cocoindex.open_flow("Refusing", _refusing_flow(str(tmp_path / "docs")))
    out = tmp_path / "out"
    flow.evaluate_and_dump(EvaluateAndDumpOptions(output_dir=str(out), use_cache=False))
    bad = _load(out / "documents@bad.txt.yaml")
    assert list(bad) == ["key", "error"]
    assert "this row holds a secret" in bad["error"]
    assert _load(out / "documents@ok.txt.yaml")["exports"] == {
        "loud": [{"filename": "ok.txt", "loud": "FINE"}]
    }


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path, cocod_db: str) -> None:
    (tmp_path / "taken").write_text("")
    flow = cocoindex.open_flow("Taken", paragraph_flow(str(_docs(tmp_path))))
    with pytest.raises(cocoindex.errors.SettingsError, match="not a directory"):
        flow.evaluate_and_dump(EvaluateAndDumpOptions(str(tmp_path / "taken"), use_cache=False))


def test_file_names_are_cut_to_v0s_limit_and_collisions_numbered() -> None:
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    names = file_prefixes("documents", [["a/b.md"], [long_a], [long_b], ["é"]])
    assert names[0] == "documents@a%2Fb.md.yaml"
    assert names[1] == "documents@" + "x" * (127 - len("documents")) + ".0.yaml"
    assert names[2] == "documents@" + "x" * (127 - len("documents")) + ".1.yaml"
    assert names[3] == "documents@%C3%A9.yaml"


def test_cli_evaluate_writes_v0s_default_folder(tmp_path: Path, database_url: str) -> None:
    write_app(tmp_path, flow="CliEval")
    env = clean_env(COCOINDEX_DATABASE_URL=database_url)
    result = run_cli(["evaluate", "main.py", "--no-cache"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    (folder,) = tmp_path.glob("eval_CliEval_*")
    assert sorted(p.name for p in folder.iterdir()) == [
        "documents@a.md.yaml",
        "documents@b.md.yaml",
    ]
    # Byte for byte what CocoIndex 0.3.39's `evaluate` writes for this row.
    assert (folder / "documents@b.md.yaml").read_text() == (
        "---\nkey:\n  filename: b.md\nexports:\n  counts:\n    - filename: b.md\n      words: 2"
    )
    named = run_cli(["evaluate", "main.py:CliEval", "-o", "mine", "--no-cache"], tmp_path, env)
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "mine" / "documents@a.md.yaml").is_file()
