"""``ParseJson``: text → a JSON value, with v0's optional ``language`` hint.

v0 knows one language, ``json`` (alias ``.json``, case-insensitive), and parses with JSON
for any other or no hint; cocod does the same, so a hint never changes the result today
but keeps flows written for v0 valid. Text that is not JSON fails that source row (a
RowError saying where), and the other rows continue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cocod.errors import RowError
from cocod.flow.specs import AnalyzedFunction, ArgSchema, FunctionExecutor, OpOptions, spec_to_json
from cocod.flow.types import basic
from cocod.ops.functions import ParseJson

KNOWN_LANGUAGES = {"json": "json", ".json": "json"}


def parse_json(text: str, language: str | None = None) -> Any:
    """Parse ``text``; ``language`` picks a parser among KNOWN_LANGUAGES (JSON otherwise)."""
    del language  # every known language, and the fallback, is JSON
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        excerpt = text[max(0, e.pos - 20) : e.pos + 20]
        raise RowError(
            f"ParseJson: the text is not valid JSON ({e.msg} at line {e.lineno} column "
            f"{e.colno}, near {excerpt!r}); fix the input or skip it before ParseJson"
        ) from None


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (v0's serde_json and Postgres' jsonb refuse them)."""
    raise RowError(
        f"ParseJson: {name} is not valid JSON (a number must be finite); replace it with "
        "null or a string before ParseJson"
    )


class ParseJsonDefinition:
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        from cocod.executors.functions import bind_arguments

        assert isinstance(spec, ParseJson)

        def _sig(text: Any, language: Any = None) -> None: ...

        bound = bind_arguments(
            "ParseJson", _sig, args, kwargs, {"text": ("Str",), "language": ("Str", "Json")}
        )
        output = basic("Json", nullable=bound["text"].type.nullable)

        def create_executor() -> FunctionExecutor:
            return parse_json

        return AnalyzedFunction(
            kind="ParseJson",
            spec_json=spec_to_json(spec),
            output_type=output,
            options=OpOptions(),
            create_executor=create_executor,
            required_inputs=frozenset({0 if args else "text"}),
        )
