"""A one-shot update of an unchanged app never loads the embedding model (nor torch).

Why a real subprocess: a `cocod update` from cron is a fresh process; whether torch and
sentence-transformers were imported is only visible in that process's ``sys.modules``.
Loading them costs seconds and hundreds of MB, for an update with nothing to embed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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

flow = cocoindex.open_flow("LazyModel", define)
flow.setup()
stats = flow.update().stats["docs"]
loaded = sorted(m for m in ("torch", "sentence_transformers") if m in sys.modules)
print(json.dumps([loaded, stats]))
cocoindex.stop()
"""


def _probe_lines(probe: str, database_url: str, docs: Path) -> list[str]:
    """What ``probe`` printed, run in a fresh interpreter (which must exit 0)."""
    result = subprocess.run(
        [sys.executable, "-c", probe, database_url, str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def _run(database_url: str, docs: Path) -> tuple[list[str], dict[str, int]]:
    loaded, stats = json.loads(_probe_lines(PROBE, database_url, docs)[-1])
    return loaded, stats


def test_unchanged_update_in_a_fresh_process_does_not_load_the_model(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    path = write(docs / "a.md", "some text to embed")
    past = time.time_ns() - 3600 * 10**9  # an ordinal old enough to be trusted
    os.utime(path, ns=(past, past))

    loaded, stats = _run(database_url, docs)
    assert stats["num_insertions"] == 1
    assert loaded == ["sentence_transformers", "torch"], "the first update embeds"

    loaded, stats = _run(database_url, docs)
    assert stats["num_no_change"] == 1 and stats.get("num_insertions", 0) == 0
    assert loaded == [], "an update with nothing to embed must not load the model"


def test_a_flow_that_embeds_on_the_cpu_claims_the_cores_before_the_model_loads(
    tmp_path: Path, database_url: str
) -> None:
    # Split workers started before the first encode would stand down at once (the model
    # uses every core), their memory in the initial index's peak for nothing.
    before_update = "stats = flow.update().stats"
    assert before_update in PROBE
    probe = PROBE.replace(
        before_update,
        "from cocod.executors import cpu_claims\n"
        "print(json.dumps([cpu_claims.cores_claimed(), 'torch' in sys.modules]))\n" + before_update,
    )
    write(tmp_path / "docs" / "a.md", "some text to embed")
    claimed, torch_loaded = json.loads(_probe_lines(probe, database_url, tmp_path / "docs")[-2])
    assert claimed and not torch_loaded
