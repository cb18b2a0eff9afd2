"""The flow builder records a graph and rejects inconsistent definitions with messages that
say what is wrong. Pure: no database, no files (the source path need not exist)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

import cocod
from cocod.errors import FlowDefinitionError, NamingError
from cocod.flow.builder import DataScope, FlowBuilder, record_flow
from cocod.flow.graph import FlowGraph
from cocod.flow.specs import spec_to_json

Define = Callable[[FlowBuilder, DataScope], None]


@dataclasses.dataclass
class Word:
    word: str
    position: int


@cocod.op.function()
def words_of(text: str) -> list[Word]:
    return [Word(w, i) for i, w in enumerate(text.split())]


@cocod.op.function()
def upper_case(text: str) -> str:
    return text.upper()


def record(define: Define) -> FlowGraph:
    return record_flow("Test", "Test", define)


def source() -> cocod.sources.LocalFile:
    return cocod.sources.LocalFile(path="/nonexistent/never/read")


def test_a_valid_definition_records_sources_scopes_collectors_and_exports() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            doc["words"] = doc["content"].transform(words_of)
            with doc["words"].row() as w:
                w["loud"] = w["word"].transform(upper_case)
                out.collect(filename=doc["filename"], position=w["position"], loud=w["loud"])
        out.export("words", cocod.targets.Postgres(), primary_key_fields=["filename", "position"])

    graph = record(define)
    assert list(graph.sources) == ["docs"]
    (export,) = graph.exports
    assert export.name == "words" and export.primary_key_fields == ("filename", "position")
    assert {n: t.describe() for n, t in export.collector.fields.items()} == {
        "filename": "Str",
        "position": "Int64",
        "loud": "Str",
    }


def test_unnamed_values_get_generated_names_from_their_op() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        docs = fb.add_source(source())
        out = scope.add_collector()
        with docs.row() as doc:
            out.collect(filename=doc["filename"], loud=doc["content"].transform(upper_case))
        out.export("t", cocod.targets.Postgres(), primary_key_fields=["filename"])

    graph = record(define)
    assert list(graph.sources) == ["local_file_0"]


def expect_error(define: Define, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        record(define)


def test_assigning_a_field_twice_is_rejected() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        scope["docs"] = fb.add_source(source())

    expect_error(define, FlowDefinitionError, "field 'docs' already exists in scope")


def test_only_data_slices_can_be_assigned() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["x"] = "text"  # type: ignore[assignment]

    expect_error(define, FlowDefinitionError, "only DataSlices can be assigned.*str")


def test_bad_field_names_are_naming_errors() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["bad-name"] = fb.add_source(source())

    expect_error(define, NamingError, "field name 'bad-name' is invalid")


def test_unknown_fields_name_the_scope_or_struct() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            doc["nope"].transform(upper_case)

    expect_error(define, KeyError, "field 'nope' does not exist in scope 'docs'")


def test_row_needs_a_table() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc, doc["content"].row():
            pass

    expect_error(define, FlowDefinitionError, "row\\(\\) needs a table.*Str")


def test_a_row_scope_cannot_be_used_after_its_block() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            pass
        doc["x"] = doc["content"].transform(upper_case)

    expect_error(define, FlowDefinitionError, "row scope 'docs' is used after its `with` block")


def test_a_source_belongs_to_the_root_scope() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            doc["inner"] = fb.add_source(source())

    expect_error(define, FlowDefinitionError, "a source can only be assigned to the root scope")


def test_transform_needs_a_function() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            doc["x"] = doc["content"].transform(str.upper)

    expect_error(define, FlowDefinitionError, "expects a function spec or a @cocod.op.function")


def test_collecting_one_field_with_two_types_is_rejected() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"], value=doc["content"])
            out.collect(filename=doc["filename"], value=doc["filename"].transform(words_of))

    expect_error(define, FlowDefinitionError, "field 'value' was collected as Str and now as")


def test_fields_missing_from_a_later_collect_become_nullable() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"], text=doc["content"])
            out.collect(filename=doc["filename"])
        out.export("t", cocod.targets.Postgres(), primary_key_fields=["filename"])

    fields = record(define).exports[0].collector.fields
    assert (fields["filename"].nullable, fields["text"].nullable) == (False, True)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ([], "export 't' needs primary_key_fields"),
        (["missing"], "primary key field 'missing' is not collected"),
        (["score"], "primary key field 'score' has type Float64"),
    ],
)
def test_export_checks_its_primary_key(key: list[str], message: str) -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"], score=1.5)
        out.export("t", cocod.targets.Postgres(), primary_key_fields=key)

    expect_error(define, FlowDefinitionError, message)


def test_an_export_name_is_used_once_and_needs_a_target_spec() -> None:
    def twice(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"])
        out.export("t", cocod.targets.Postgres(), primary_key_fields=["filename"])
        out.export("t", cocod.targets.Postgres(), primary_key_fields=["filename"])

    expect_error(twice, FlowDefinitionError, "export 't' is defined twice")

    def not_a_target(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"])
        out.export("t", "postgres", primary_key_fields=["filename"])  # type: ignore[arg-type]

    expect_error(not_a_target, FlowDefinitionError, "'postgres' is not a target spec")


def test_only_root_collectors_are_exported() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            inner = doc.add_collector()
            inner.collect(filename=doc["filename"])
            inner.export("t", cocod.targets.Postgres(), primary_key_fields=["filename"])

    expect_error(define, FlowDefinitionError, "only collectors of the root scope can be exported")


def test_a_collector_cannot_collect_from_an_unrelated_scope() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["docs"] = fb.add_source(source())
        with scope["docs"].row() as doc:
            doc["words"] = doc["content"].transform(words_of)
            with doc["words"].row() as w:
                inner = w.add_collector()
            inner.collect(filename=doc["filename"])

    expect_error(define, FlowDefinitionError, "belongs to scope .*words.*cannot collect from")


def test_declarations_are_refused_with_the_reason() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        fb.declare(object())

    expect_error(define, FlowDefinitionError, "graph databases, which cocod does not support")


def test_spec_json_omits_none_fields_so_new_options_keep_fingerprints() -> None:
    spec = cocod.sources.LocalFile(path="docs")
    as_json = spec_to_json(spec)
    assert as_json["path"] == "docs"
    assert None not in as_json.values()
    assert spec_to_json({"a": (1, 2.5, None)}) == {"a": [1, 2.5, None]}


class Tickets(cocod.op.SourceSpec):
    project: str


class TicketKey(NamedTuple):
    project: str
    number: int


@dataclasses.dataclass
class Ticket:
    title: str
    labels: list[str]


@cocod.op.source_connector(spec_cls=Tickets, key_type=TicketKey, value_type=Ticket)
class TicketsConnector:
    @staticmethod
    def create(spec: Tickets) -> TicketsConnector:
        return TicketsConnector()

    def list(self) -> list[Any]:
        return []

    def get_value(self, key: TicketKey) -> Any:
        return None


def test_a_custom_source_has_the_fields_of_its_key_and_value_types() -> None:
    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["tickets"] = fb.add_source(Tickets(project="x"))
        with scope["tickets"].row() as t:
            t["shout"] = t["title"].transform(upper_case)

    graph = record(define)
    src = graph.sources["tickets"]
    assert [f.name for f in src.row_type.fields] == ["project", "number", "title", "labels"]
    assert [f.type.kind for f in src.row_type.fields] == ["Str", "Int64", "Str", "Vector"]
    assert src.num_key_parts == 2


def test_a_source_spec_without_connector_says_how_to_register_one() -> None:
    class Unknown(cocod.op.SourceSpec):
        x: int

    def define(fb: FlowBuilder, scope: DataScope) -> None:
        scope["u"] = fb.add_source(Unknown(1))

    with pytest.raises(FlowDefinitionError, match=r"@cocod.op.source_connector\(spec_cls=Unknown"):
        record(define)


def test_source_connectors_are_checked_when_decorated() -> None:
    class Spec(cocod.op.SourceSpec):
        pass

    with pytest.raises(FlowDefinitionError, match="pass key_type"):
        cocod.op.source_connector(spec_cls=Spec, value_type=Ticket)
    with pytest.raises(FlowDefinitionError, match="cannot be a key"):

        @cocod.op.source_connector(spec_cls=Spec, key_type=float, value_type=Ticket)
        class FloatKeys:
            create = list = get_value = staticmethod(lambda *a: None)

    with pytest.raises(FlowDefinitionError, match="needs a get_value"):

        @cocod.op.source_connector(spec_cls=Spec, key_type=str, value_type=Ticket)
        class NoGetValue:
            create = list = staticmethod(lambda *a: None)
