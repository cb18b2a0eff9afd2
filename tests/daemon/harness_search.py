"""Helpers of the search, MCP and progress tests: flows whose rows search must locate.

``located_factory`` splits files with SplitRecursively (so rows carry a ``location``
but no line columns: the daemon derives the lines from the file) and embeds with the
tests' deterministic tiny embedder, under the metric its params name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import cocod as cocoindex
from bench.paragraph_flow import FlowDefinition, paragraph_flow
from tests.flows import Paragraph, paragraphs_of, tiny_embed

METRICS = {
    "cosine": cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
    "l2": cocoindex.VectorSimilarityMetric.L2_DISTANCE,
}


@dataclass
class LocatedParams:
    source_path: str
    table: str
    metric: str = "cosine"
    chunk_size: int = 60


def located_factory(params: LocatedParams):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=params.source_path))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=params.chunk_size,
                chunk_overlap=0,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].transform(tiny_embed)
                out.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        out.export(
            "chunks",
            cocoindex.targets.Postgres(table_name=params.table),
            primary_key_fields=["filename", "location"],
            vector_indexes=[cocoindex.VectorIndexDef("embedding", METRICS[params.metric])],
        )

    return define


def located_instance(name: str, folder: Path, table: str, metric: str = "cosine") -> str:
    """A ``[flows.NAME]`` section for :func:`located_factory`."""
    return (
        f'[flows.{name}]\ndefinition = "tests.daemon.harness_search:located_factory"\n'
        f'[flows.{name}.params]\nsource_path = "{folder}"\ntable = "{table}"\n'
        f'metric = "{metric}"\n'
    )


def loaded_modules_of(pid: int) -> str:
    """The shared objects and files mapped into a process (``/proc/PID/maps``): torch
    imported means its ``libtorch`` libraries are mapped."""
    return Path(f"/proc/{pid}/maps").read_text()


def pids_running(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (our own children only matter:
    the fragment is a path under the test's tmp_path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if fragment.encode() in cmdline:
            found.append(int(entry))
    return found


@dataclass
class SlowParams:
    source_path: str
    table: str
    delay: float = 0.02


def slow_factory(params: SlowParams) -> FlowDefinition:
    """The paragraph flow, each file's split slowed by ``delay`` seconds, so an update
    of a few dozen files lasts long enough to report progress several times."""

    @cocoindex.op.function()
    def slow_paragraphs(content: str) -> list[Paragraph]:
        time.sleep(params.delay)
        return paragraphs_of(content)

    return paragraph_flow(
        params.source_path,
        params.table,
        split=slow_paragraphs,
        embed=tiny_embed,
        metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
    )


def slow_instance(
    name: str, folder: Path, table: str, live: bool = False, delay: float = 0.02
) -> str:
    return (
        f'[flows.{name}]\ndefinition = "tests.daemon.harness_search:slow_factory"\n'
        f"live = {'true' if live else 'false'}\n"
        f'[flows.{name}.params]\nsource_path = "{folder}"\ntable = "{table}"\n'
        f"delay = {delay}\n"
    )
