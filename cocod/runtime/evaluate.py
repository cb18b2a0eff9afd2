"""``Flow.evaluate_and_dump`` / ``cocod evaluate``: a flow's rows as YAML files, nothing written.

What v0's ``evaluate`` does (``rust/cocoindex/src/execution/dumper.rs``): every source is
listed and every row evaluated with the flow's own evaluator; instead of committing, each
source row becomes one file ``{source}@{key}[.i].yaml`` in ``output_dir``, where ``key`` is
the row's key parts, each URL-encoded, joined by ``:`` and cut to fit 128 characters with the
source name; rows whose cut key collides are told apart by ``.0``, ``.1``, … in listing
(here: sorted) order. A file holds the ``key`` (a mapping of the key fields), then
``exports``: per export, its rows sorted by primary key; or ``error`` when the row failed.

Targets, tracking and the memo are never written. ``use_cache`` reads memoized function
results, which needs the flow's setup to be current (as in v0); without the cache no
database is touched at all (v0 requires setup either way).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
import yaml

from cocod.engine.evaluator import RowMemo
from cocod.engine.plan import ExportPlan
from cocod.errors import SettingsError, SourceError
from cocod.runtime.context import LibraryContext
from cocod.runtime.execution import FlowExecution, max_rows_per_source_row, thread_limiter

log = structlog.get_logger(__name__)

FILENAME_PREFIX_MAX_LENGTH = 128
"""v0's bound on ``{source}@{key}`` (the key is cut to ``127 - len(source)`` characters)."""
MAX_CONCURRENT_ROWS = 16


@dataclass
class EvaluateAndDumpOptions:
    """v0's ``cocoindex.flow.EvaluateAndDumpOptions``."""

    output_dir: str
    use_cache: bool = True


def file_prefixes(source_name: str, keys: Sequence[Sequence[str]]) -> list[str]:
    """The file name of each key's dump, v0's rule (see the module docstring)."""
    limit = max(0, FILENAME_PREFIX_MAX_LENGTH - len(source_name) - 1)
    prefixes = [
        ":".join(urllib.parse.quote(part, safe="") for part in parts)[:limit] for parts in keys
    ]
    groups: dict[str, list[int]] = {}
    for i, prefix in enumerate(prefixes):
        groups.setdefault(prefix, []).append(i)
    names = [""] * len(keys)
    for prefix, members in groups.items():
        for n, i in enumerate(members):
            extra = f".{n}" if len(members) > 1 else ""
            names[i] = f"{source_name}@{prefix}{extra}.yaml"
    return names


async def evaluate_and_dump(
    execution: FlowExecution, ctx: LibraryContext, options: EvaluateAndDumpOptions
) -> None:
    """Evaluate every row of every source of ``execution``; write one YAML file per row."""
    output_dir = Path(options.output_dir)
    await anyio.to_thread.run_sync(_prepare_output_dir, output_dir)
    memo_store = None
    if options.use_cache:
        # Raises SetupOutOfDateError when setup is not current, like v0.
        memo_store, _ = await execution.open_store(ctx)
    cap = max_rows_per_source_row(ctx.settings)
    async with anyio.create_task_group() as tg:
        for name in execution.sources:
            tg.start_soon(_dump_source, execution, name, memo_store, output_dir, cap)


def _prepare_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise SettingsError(
            f"the evaluate output path {str(output_dir)!r} exists and is not a directory; "
            "give another --output-dir"
        )
    output_dir.mkdir(parents=True, exist_ok=True)


async def _dump_source(
    execution: FlowExecution,
    name: str,
    memo_store: Any,
    output_dir: Path,
    cap: int,
) -> None:
    runtime = execution.sources[name]
    source = execution.plan.sources[name].source
    key_fields = [f.name for f in source.row_type.fields[: source.num_key_parts]]
    try:
        keys = sorted(await runtime.reader.list_rows())
    except OSError as e:
        raise SourceError(f"source {name!r}: {e.strerror or e}") from e
    file_names = file_prefixes(name, [[k] for k in keys])
    exports = list(execution.plan.exports.values())  # v0 lists every export for every row
    limiter = anyio.Semaphore(MAX_CONCURRENT_ROWS)

    async def one(key: str, file_name: str) -> None:
        try:
            document: dict[str, Any] = {"key": dict(zip(key_fields, [key], strict=False))}
            collected: dict[str, list[dict[str, Any]]] | None = None
            try:
                row = await runtime.reader.read_row(key)
                if row is None:
                    return  # gone since the listing
                memo = RowMemo(memo_store, read_cache=memo_store is not None)
                collected = await runtime.evaluator.evaluate(
                    row.value, memo, max_rows_per_collector=cap
                )
            except SourceError:
                raise
            except Exception as e:  # a row's failure is that row's file, as in v0
                log.warning("evaluate.row_failed", source=name, key=key, error=str(e))
                document["error"] = f"{type(e).__name__}: {e}"

            def write() -> None:
                # Sorting and YAML-encoding thousands of vectors is CPU work: a thread.
                if collected is not None:
                    document["exports"] = {
                        e.name: _sorted_rows(e, collected.get(e.export.collector.name, []))
                        for e in exports
                    }
                (output_dir / file_name).write_text(dump_yaml(document))

            await anyio.to_thread.run_sync(write, limiter=thread_limiter())
        finally:
            limiter.release()

    async with anyio.create_task_group() as tg:
        for key, file_name in zip(keys, file_names, strict=True):
            await limiter.acquire()  # at most MAX_CONCURRENT_ROWS rows (and tasks) at once
            tg.start_soon(one, key, file_name)


def _sorted_rows(export: ExportPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in primary-key order, as v0 writes them (a BTreeMap by key)."""

    def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_orderable(row.get(k)) for k in export.key_fields)

    return [_plain(r) for r in sorted(rows, key=sort_key)]


def _orderable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float | str):
        return (1, value) if not isinstance(value, str) else (2, value)
    return (3, repr(_plain(value)))


def _plain(value: Any) -> Any:
    """A value YAML can write: structs as mappings, vectors as lists, others as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if getattr(value, "dtype", None) is not None and str(value.dtype) == "float32":
        # float32 written as its shortest text (0.1, not 0.10000000149011612), as v0 does.
        return [float(str(x)) for x in value.reshape(-1)] if value.ndim else float(str(value))
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta | uuid.UUID):
        return str(value) if not hasattr(value, "isoformat") else value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


class _Dumper(yaml.SafeDumper):
    """v0's emitter's layout: a ``---`` start, sequences indented under their key,
    multi-line strings as literal blocks (``|-``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        # Where a plain scalar will not do, v0 writes double quotes, PyYAML single ones.
        style: str = super().choose_scalar_style()
        return '"' if style == "'" else style


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(document: dict[str, Any]) -> str:
    """The file's text; like v0's, it has no newline after the last line."""
    text = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        explicit_start=True,
        width=float("inf"),
    )
    return text.rstrip("\n")


__all__ = ["EvaluateAndDumpOptions", "dump_yaml", "evaluate_and_dump", "file_prefixes"]
