"""EmbedText and ExtractByLlm against a local OpenAI-compatible HTTP stub (a real socket).

The stub is ``http.server`` in a thread on 127.0.0.1, started by each test; nothing reaches
the network. It records every request and can be told to fail the next ones (429, 5xx, 401)
so retries and errors are exercised through real HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

import cocod as cocoindex
from cocod.auth_registry import add_transient_auth_entry
from cocod.errors import FlowDefinitionError
from cocod.executors import llm as llm_executor
from cocod.flow.types import type_of_annotation
from cocod.functions import EmbedText, ExtractByLlm
from cocod.llm import LlmApiType, LlmSpec
from tests.conftest import SqlHelper, write


@dataclasses.dataclass
class Stub:
    """What the stub saw, and the failures it still has to answer with."""

    requests: list[tuple[str, dict[str, str], Any]] = dataclasses.field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    address: str = ""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def of(self, path: str) -> list[Any]:
        return [body for p, _, body in self.requests if p == path]


def _vector(text: str) -> list[float]:
    return [float(len(text)), float(text.count("a")), 1.0, 0.5]


def _extract(body: dict[str, Any]) -> dict[str, Any]:
    text = body["messages"][1]["content"]
    words = text.split()
    return {"title": words[0], "word_count": len(words), "tags": words[1:3]}


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((self.path, dict(self.headers), body))
                failure = state.failures.pop(0) if state.failures else None
            if failure is not None:
                status, headers = failure
                self._reply(status, {"error": {"message": f"stub says {status}"}}, headers)
            elif self.path == "/v1/embeddings":
                data = [
                    {"object": "embedding", "index": i, "embedding": _vector(t)}
                    for i, t in enumerate(body["input"])
                ]
                self._reply(200, {"object": "list", "data": list(reversed(data))})
            elif self.path == "/v1/chat/completions":
                content = json.dumps(_extract(body))
                message = {"role": "assistant", "content": content}
                self._reply(200, {"choices": [{"index": 0, "message": message}]})
            else:
                self._reply(404, {"error": {"message": "no such path"}})

        def _reply(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.address = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _embed_flow(source: str, spec: EmbedText):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["embedding"] = f["content"].transform(spec)
            out.collect(filename=f["filename"], embedding=f["embedding"])
        out.export(
            "vectors",
            cocoindex.targets.Postgres(),
            primary_key_fields=["filename"],
            vector_indexes=[
                cocoindex.VectorIndexDef("embedding", cocoindex.VectorSimilarityMetric.L2_DISTANCE)
            ],
        )

    return define


def test_embed_text_through_a_flow_with_an_auth_entry(
    tmp_path: Path, sql: SqlHelper, stub: Stub
) -> None:
    docs = tmp_path / "docs"
    texts = {f"f{i}.md": "banana " * (i + 1) for i in range(5)}
    for name, text in texts.items():
        write(docs / name, text)
    spec = EmbedText(
        api_type=LlmApiType.OPENAI,
        model="stub-embed",
        address=stub.address,
        output_dimension=4,
        api_key=add_transient_auth_entry("sk-stub-secret"),
    )
    flow = cocoindex.open_flow("Embedded", _embed_flow(str(docs), spec))
    flow.setup()
    flow.update()

    rows = sql.fetch("SELECT filename, embedding::real[] AS e FROM embedded__vectors")
    assert {r["filename"]: list(r["e"]) for r in rows} == {n: _vector(t) for n, t in texts.items()}
    assert (
        sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embedded__vectors'::regclass AND attname = 'embedding'"
        )
        == "vector(4)"
    )
    calls = stub.of("/v1/embeddings")
    assert sorted(t for c in calls for t in c["input"]) == sorted(texts.values())
    assert all(c["model"] == "stub-embed" and c["dimensions"] == 4 for c in calls)
    headers = [h for p, h, _ in stub.requests]
    assert all(h["Authorization"] == "Bearer sk-stub-secret" for h in headers)

    before = len(stub.requests)
    flow.update(reexport_targets=True)
    assert len(stub.requests) == before, "embeddings are memoized: no new requests"


def test_embed_text_retries_429_and_5xx(tmp_path: Path, sql: SqlHelper, stub: Stub) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    stub.failures = [(429, {"Retry-After": "0"}), (503, {}), (500, {})]
    spec = EmbedText(
        api_type=LlmApiType.OPENAI, model="m", address=stub.address, output_dimension=4
    )
    flow = cocoindex.open_flow("Retried", _embed_flow(str(tmp_path / "docs"), spec))
    flow.setup()
    info = flow.update()
    assert info.stats["files"]["num_errors"] == 0
    assert len(stub.of("/v1/embeddings")) == 4
    assert list(sql.fetch("SELECT embedding::real[] FROM retried__vectors")[0][0]) == _vector(
        "alpha"
    )


def test_a_refused_request_fails_with_a_typed_error_and_no_retry(stub: Stub) -> None:
    stub.failures = [(401, {})]
    endpoint = llm_executor.open_endpoint("EmbedText", LlmApiType.OPENAI, stub.address, None, None)

    async def call() -> None:
        await endpoint.post("embeddings", {"model": "m", "input": ["x"]})

    with pytest.raises(llm_executor.LlmApiError, match=r"HTTP 401.*API key"):
        anyio.run(call)
    assert len(stub.requests) == 1


def test_retries_stop_after_the_last_attempt(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_executor, "MAX_ATTEMPTS", 3)
    stub.failures = [(500, {"Retry-After": "0"})] * 5
    endpoint = llm_executor.open_endpoint("EmbedText", LlmApiType.VLLM, stub.address, None, None)

    async def call() -> None:
        await endpoint.post("embeddings", {"model": "m", "input": ["x"]})

    with pytest.raises(llm_executor.LlmApiError, match="failed 3 times"):
        anyio.run(call)
    assert len(stub.requests) == 3


def test_backoff_is_capped_and_jittered() -> None:
    delays = [llm_executor.backoff_delay(n) for n in range(1, 30)]
    assert max(delays) <= llm_executor.BACKOFF_CAP_S
    assert len({round(d, 6) for d in delays[10:]}) > 1, "jittered, not a fixed delay"
    assert llm_executor.backoff_delay(1, retry_after=10_000) == llm_executor.BACKOFF_CAP_S


@dataclasses.dataclass
class Summary:
    """What the document is about."""

    title: str
    word_count: int
    tags: list[str]


def test_extract_by_llm_through_a_flow(tmp_path: Path, sql: SqlHelper, stub: Stub) -> None:
    write(tmp_path / "docs" / "a.md", "Cocod keeps indexes in sync")
    source = str(tmp_path / "docs")
    spec = ExtractByLlm(
        llm_spec=LlmSpec(api_type=LlmApiType.OPENAI, model="stub-chat", address=stub.address),
        output_type=Summary,
        instruction="Summarise the document.",
    )

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["summary"] = f["content"].transform(spec)
            out.collect(
                filename=f["filename"],
                title=f["summary"]["title"],
                words=f["summary"]["word_count"],
                summary=f["summary"],
            )
        out.export("summaries", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    flow = cocoindex.open_flow("Extracted", define)
    flow.setup()
    flow.update()
    (row,) = sql.fetch("SELECT * FROM extracted__summaries")
    assert (row["title"], row["words"]) == ("Cocod", 5)
    summary = row["summary"] if isinstance(row["summary"], dict) else json.loads(row["summary"])
    assert summary == {"title": "Cocod", "word_count": 5, "tags": ["keeps", "indexes"]}

    (request,) = stub.of("/v1/chat/completions")
    assert request["model"] == "stub-chat"
    assert request["messages"][0]["content"].endswith("Summarise the document.")
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["title", "word_count", "tags"]
    assert schema["additionalProperties"] is False
    assert schema["description"] == "What the document is about."


def test_a_plain_output_type_is_wrapped_in_an_object() -> None:
    executor = llm_executor.ExtractByLlmExecutor(
        ExtractByLlm(llm_spec=LlmSpec(api_type=LlmApiType.VLLM, model="m"), output_type=list[str]),
        type_of_annotation(list[str]).with_nullable(),
    )
    assert executor._schema["properties"]["value"] == {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize("api_type", [LlmApiType.ANTHROPIC, LlmApiType.GEMINI])
def test_services_without_an_openai_api_fail_at_definition(
    tmp_path: Path, cocod_db: str, api_type: LlmApiType
) -> None:
    spec = EmbedText(api_type=api_type, model="m", output_dimension=4)
    flow = cocoindex.open_flow(f"Unsupported{api_type.name}", _embed_flow(str(tmp_path), spec))
    try:
        with pytest.raises(FlowDefinitionError, match="OpenAI-compatible"):
            flow.execution()
    finally:
        flow.close()


def test_an_unknown_embedding_dimension_fails_at_definition(tmp_path: Path, cocod_db: str) -> None:
    spec = EmbedText(api_type=LlmApiType.OPENAI, model="my-model", address="http://x/v1")
    flow = cocoindex.open_flow("NoDim", _embed_flow(str(tmp_path), spec))
    try:
        with pytest.raises(FlowDefinitionError, match="output_dimension"):
            flow.execution()
    finally:
        flow.close()


def test_embed_text_in_a_transform_flow_as_the_v0_examples_query(cocod_db: str, stub: Stub) -> None:
    """text_embedding's README switch to EmbedText: the shared query-time transform."""

    @cocoindex.transform_flow()
    def text_to_embedding(
        text: cocoindex.DataSlice[str],
    ) -> cocoindex.DataSlice[cocoindex.Vector[float, Literal[4]]]:
        return text.transform(
            EmbedText(
                api_type=LlmApiType.OPENAI, model="m", address=stub.address, output_dimension=4
            )
        )

    assert list(text_to_embedding.eval("banana")) == _vector("banana")


@dataclasses.dataclass
class Person:
    name: str
    born: datetime.date | None
    nicknames: list[str]


def test_the_json_schema_follows_v0s_openai_options() -> None:
    from cocod.executors.llm_schema import json_schema

    schema = json_schema(type_of_annotation(Person))
    assert schema["required"] == ["name", "born", "nicknames"]
    assert schema["additionalProperties"] is False and "description" not in schema
    assert schema["properties"]["born"]["type"] == ["string", "null"]
    assert "YYYY-MM-DD" in schema["properties"]["born"]["description"]
    assert schema["properties"]["nicknames"] == {"type": "array", "items": {"type": "string"}}
    with pytest.raises(FlowDefinitionError, match="cannot be asked of an LLM"):
        json_schema(type_of_annotation(Any))
