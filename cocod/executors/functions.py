"""Definitions of the built-in functions: their signatures, output types and executors.

Registered with the flow layer on import, so ``text.transform(SplitRecursively(), ...)`` can
be type-checked while the flow is defined.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.specs import (
    AnalyzedFunction,
    ArgSchema,
    FunctionExecutor,
    OpOptions,
    register_function,
    spec_to_json,
)
from cocod.flow.types import ValueType, basic, struct, table
from cocod.ops.functions import (
    DetectProgrammingLanguage,
    EmbedText,
    ExtractByLlm,
    ParseJson,
    SentenceTransformerEmbed,
    SplitBySeparators,
    SplitRecursively,
)

_POSITION = struct(
    [("offset", basic("Int64")), ("line", basic("Int64")), ("column", basic("Int64"))]
)
CHUNK_ROW = struct(
    [
        ("location", basic("Range")),
        ("text", basic("Str")),
        ("start", _POSITION),
        ("end", _POSITION),
    ]
)


def _bind(
    kind: str,
    signature: inspect.Signature,
    args: Sequence[ArgSchema],
    kwargs: Mapping[str, ArgSchema],
    expected: Mapping[str, tuple[str, ...]],
) -> dict[str, ArgSchema]:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise FlowDefinitionError(f"{kind}: {e}") from None
    for name, schema in bound.arguments.items():
        kinds = expected[name]
        if schema.type.kind not in kinds:
            raise FlowDefinitionError(
                f"{kind}: argument {name!r} must be {' or '.join(kinds)}, "
                f"got {schema.type.describe()}"
            )
    return dict(bound.arguments)


def bind_arguments(
    kind: str,
    signature_of: Any,
    args: Sequence[ArgSchema],
    kwargs: Mapping[str, ArgSchema],
    expected: Mapping[str, tuple[str, ...]],
) -> dict[str, ArgSchema]:
    """Bind a call's inputs to ``signature_of``'s parameters and check their kinds.

    Shared by the built-in functions defined in other modules (separators, JSON, LLM).
    """
    return _bind(kind, inspect.signature(signature_of), args, kwargs, expected)


def _split_signature(
    text: Any,
    chunk_size: Any,
    min_chunk_size: Any = None,
    chunk_overlap: Any = None,
    language: Any = None,
) -> None: ...


class _SplitRecursivelyDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        assert isinstance(spec, SplitRecursively)
        bound = _bind(
            "SplitRecursively",
            inspect.signature(_split_signature),
            args,
            kwargs,
            {
                "text": ("Str",),
                "chunk_size": ("Int64",),
                "min_chunk_size": ("Int64", "Json"),
                "chunk_overlap": ("Int64", "Json"),
                "language": ("Str", "Json"),
            },
        )
        from cocod.executors.splitter import CustomLanguage, RecursiveSplitter

        params = list(inspect.signature(_split_signature).parameters)
        output = table("KTable", CHUNK_ROW)
        if bound["text"].type.nullable or bound["chunk_size"].type.nullable:
            output = output.with_nullable()
        languages = [
            CustomLanguage(c.language_name, list(c.separators_regex), list(c.aliases))
            for c in spec.custom_languages
        ]
        try:  # fail while defining the flow on bad regexes or duplicate names
            RecursiveSplitter(languages)
        except ValueError as e:
            raise FlowDefinitionError(f"SplitRecursively: {e}") from None

        def create_executor() -> FunctionExecutor:
            from cocod.executors.splitting.processes import languages_key, shared_processes

            splitter = RecursiveSplitter(languages)
            key = languages_key(languages)
            processes = shared_processes()

            def split(
                text: str,
                chunk_size: int,
                min_chunk_size: int | None = None,
                chunk_overlap: int | None = None,
                language: str | None = None,
            ) -> list[dict[str, Any]]:
                request = (
                    key,
                    text,
                    int(chunk_size),
                    _opt_int(min_chunk_size),
                    _opt_int(chunk_overlap),
                    language,
                )
                spans = processes.split(request, lambda: splitter.split_spans(*request[1:]))
                return [
                    {
                        "location": (start, end),
                        "text": text[start:end],
                        "start": {"offset": start, "line": start_line, "column": start_col},
                        "end": {"offset": end, "line": end_line, "column": end_col},
                    }
                    for start, end, start_line, start_col, end_line, end_col in spans
                ]

            return split

        return AnalyzedFunction(
            kind="SplitRecursively",
            spec_json=spec_to_json(spec),
            output_type=output,
            options=OpOptions(),
            create_executor=create_executor,
            required_inputs=frozenset(_required(params, args, ("text", "chunk_size"))),
        )


def _required(
    params: list[str], args: Sequence[ArgSchema], names: tuple[str, ...]
) -> set[int | str]:
    out: set[int | str] = set()
    for name in names:
        i = params.index(name)
        out.add(i if i < len(args) else name)
    return out


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


class _DetectLanguageDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        def _sig(filename: Any) -> None: ...

        _bind(
            "DetectProgrammingLanguage",
            inspect.signature(_sig),
            args,
            kwargs,
            {"filename": ("Str",)},
        )

        def create_executor() -> FunctionExecutor:
            from cocod.executors.languages import detect_programming_language

            return detect_programming_language

        return AnalyzedFunction(
            kind="DetectProgrammingLanguage",
            spec_json=spec_to_json(spec),
            output_type=basic("Str", nullable=True),
            options=OpOptions(),
            create_executor=create_executor,
            required_inputs=frozenset({0 if args else "filename"}),
        )


class _SentenceTransformerDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        assert isinstance(spec, SentenceTransformerEmbed)

        def _sig(text: Any) -> None: ...

        bound = _bind(
            "SentenceTransformerEmbed", inspect.signature(_sig), args, kwargs, {"text": ("Str",)}
        )
        if kwargs:
            raise FlowDefinitionError("SentenceTransformerEmbed: pass `text` positionally")
        from cocod.executors.embedder import embedding_dimension

        dim = embedding_dimension(spec.model)
        output = ValueType("Vector", element=basic("Float32"), dimension=dim)
        if bound["text"].type.nullable:
            output = output.with_nullable()
        model, model_args = spec.model, spec.args
        # The cores are the model's from the moment a flow embeds with it, not from its
        # load: an initial index splits its first files before the first encode loads the
        # model, and split workers started then would stand down right after, their
        # memory counted in the peak for nothing. The load hands them back on a GPU.
        from cocod.executors.cpu_claims import claim_cores
        from cocod.executors.embedder import model_claim_owner

        claim_cores(model_claim_owner(model, model_args))

        def create_executor() -> FunctionExecutor:
            from cocod.executors.embedder import SentenceTransformerExecutor

            return SentenceTransformerExecutor(model, model_args)

        return AnalyzedFunction(
            kind="SentenceTransformerEmbed",
            spec_json=spec_to_json(spec),
            output_type=output,
            options=OpOptions(cache=True, behavior_version=1, batching=True, max_batch_size=512),
            create_executor=create_executor,
            required_inputs=frozenset({0}),
            is_async=True,
        )


def register_builtin_functions() -> None:
    from cocod.executors.json_parse import ParseJsonDefinition
    from cocod.executors.llm import EmbedTextDefinition, ExtractByLlmDefinition
    from cocod.executors.separators import SplitBySeparatorsDefinition

    register_function(SplitRecursively, _SplitRecursivelyDefinition())
    register_function(DetectProgrammingLanguage, _DetectLanguageDefinition())
    register_function(SentenceTransformerEmbed, _SentenceTransformerDefinition())
    register_function(SplitBySeparators, SplitBySeparatorsDefinition())
    register_function(ParseJson, ParseJsonDefinition())
    register_function(EmbedText, EmbedTextDefinition())
    register_function(ExtractByLlm, ExtractByLlmDefinition())


register_builtin_functions()
