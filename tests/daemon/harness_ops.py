"""Helpers for the daemon's operations tests: a slowed flow, metrics scraping, free ports.

The slowed flow is the paragraph flow with an embedder that sleeps per chunk (a seam we
own, like the tiny embedder), so a first pass over a hundred files takes seconds: long
enough to pause it, or to read its progress from ``status``, while it runs.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import cocod as cocoindex
from bench.paragraph_flow import FlowDefinition, paragraph_flow
from tests.conftest import write
from tests.daemon.harness import DaemonProcess
from tests.flows import split_paragraphs, tiny_vector

SLOW_EMBED_SECONDS = float(os.environ.get("COCOD_TEST_SLOW_EMBED_SECONDS", "0.3"))


@cocoindex.op.function(cache=True, behavior_version=1)
def slow_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """The tiny embedder, slowed down like a real model on a laptop CPU."""
    time.sleep(SLOW_EMBED_SECONDS)
    return tiny_vector(text)


@cocoindex.op.function()
def record_torch_threads(text: str) -> str:
    """Writes how many threads torch computes with (``[daemon] embed_threads``)."""
    import torch

    Path(os.environ["COCOD_TEST_THREADS_FILE"]).write_text(str(torch.get_num_threads()))
    return text


@dataclass
class SlowParams:
    source_path: str
    table: str


def slow_factory(params: SlowParams) -> FlowDefinition:
    return paragraph_flow(
        params.source_path, params.table, split=split_paragraphs, embed=slow_embed
    )


def threads_factory(params: SlowParams):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=params.source_path))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["checked"] = doc["content"].transform(record_torch_threads)
            out.collect(filename=doc["filename"], text=doc["checked"])
        out.export(
            "files",
            cocoindex.targets.Postgres(table_name=params.table),
            primary_key_fields=["filename"],
        )

    return define


def flow_section(name: str, folder: Path, table: str, factory: str, extra: str = "") -> str:
    return (
        f'[flows.{name}]\ndefinition = "tests.daemon.harness_ops:{factory}"\n{extra}'
        f'[flows.{name}.params]\nsource_path = "{folder}"\ntable = "{table}"\n'
    )


def write_files(folder: Path, count: int, prefix: str = "f") -> None:
    for i in range(count):
        write(folder / f"{prefix}{i:03}.md", f"{prefix} file number {i}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed: sample name → {sorted labels → value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def status(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    reply = daemon.request("status", name=name)
    assert reply["ok"], reply
    result: dict[str, Any] = reply["result"][0]
    return result


def command(daemon: DaemonProcess, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    reply = daemon.request(cmd, timeout=timeout, **args)
    assert reply["ok"], reply
    return reply["result"]
