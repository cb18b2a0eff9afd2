"""Defining, setting up and dropping a flow that embeds never loads the model (or torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import write

PROBE = r"""
import json, sys
import cocod as cocoindex

cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=sys.argv[1])))

def define(fb, scope):
    scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=sys.argv[2]))
    out = scope.add_collector()
    with scope["docs"].row() as doc:
        doc["vec"] = doc["content"].transform(
            cocoindex.functions.SentenceTransformerEmbed(model="all-MiniLM-L6-v2"))
        out.collect(filename=doc["filename"], vec=doc["vec"])
    out.export("vecs", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

flow = cocoindex.open_flow("NoModel", define)
flow.setup()
after_setup = sorted(m for m in ("torch", "sentence_transformers") if m in sys.modules)
dimension = flow.execution().plan.exports["vecs"].value_types[0].dimension
flow.drop()
after_drop = sorted(m for m in ("torch", "sentence_transformers") if m in sys.modules)
flow.setup()
flow.update()
after_update = sorted(m for m in ("torch", "sentence_transformers") if m in sys.modules)
print(json.dumps([after_setup, after_drop, after_update, dimension]))
cocoindex.stop()
"""


def test_setup_and_drop_read_the_dimension_without_loading_the_model(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "docs" / "a.md", "some text to embed")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, database_url, str(tmp_path / "docs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    after_setup, after_drop, after_update, dimension = json.loads(result.stdout.splitlines()[-1])
    assert after_setup == [] and after_drop == [], "setup/drop must not import torch"
    assert dimension == 384
    assert after_update == ["sentence_transformers", "torch"], "update loads it on first use"
