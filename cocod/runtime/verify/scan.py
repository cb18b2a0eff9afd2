"""Compare tracking, target tables and files, streaming each side once: O(rows).

Tracking and every target table are read in one REPEATABLE READ transaction, so a row
committed by a live pass meanwhile is seen on both sides or on neither (a pass commits
its target rows and tracking together). The tracked keys of each export are held in a
dict; the table is streamed through a cursor and each row pops its key: what is left is
missing, what finds nothing is an orphan.

Table values are checked against tracking without re-running the flow: each tracked key
carries the fingerprint of the values cocod wrote (schema version + value columns), and
for column types that read back exactly (text, integers, float8, uuid, dates, float32
vectors in a ``vector(N)`` column, …) the same fingerprint is computed from the row in
the table. A row edited behind cocod's back (its text, its embedding) is therefore found
without embedding anything. Columns stored as jsonb or halfvec do not read back exactly:
their exports get a note instead of a value check. Files are checked by content
fingerprint, which catches an edit that kept mtime and size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from cocod.engine.fingerprint import Fingerprinter
from cocod.engine.interfaces import Ordinal
from cocod.engine.plan import ExportPlan
from cocod.engine.setup import USER_MANAGED, FlowSetupPlan
from cocod.engine.values import from_json_value, key_to_json_text
from cocod.errors import RowError, SourceError
from cocod.executors import custom_target
from cocod.executors.local_file import LocalFileReader
from cocod.executors.postgres import TargetTable, table_of
from cocod.executors.postgres import statements as target_sql
from cocod.flow.naming import quote_ident
from cocod.flow.types import ValueType
from cocod.runtime.execution import FlowExecution
from cocod.runtime.verify.report import VerifyReport
from cocod.storage.pool import Connection

CURSOR_PREFETCH = 2000
READ_CONCURRENCY = 8
_EXACT_KINDS = {"Str", "Bool", "Int64", "Float64", "Bytes", "Uuid", "Date", "Time", "Range"}
_EXACT_KINDS |= {"LocalDateTime"}

Progress = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class TrackedSource:
    """One tracking row, as much of it as the file check needs."""

    raw_key: Any  # as stored (text today; bytes once keys are stored losslessly)
    ordinal: Ordinal | None
    content_fp: bytes | None
    logic_fp: bytes | None


@dataclass
class ExportCheck:
    plan: ExportPlan
    state: dict[str, Any]
    is_user_managed: bool
    schema_version: int
    target_signature: str
    exists: bool = True
    key_columns_ok: bool = True
    columns_to_restore: list[tuple[str, str]] = field(default_factory=list)
    missing_indexes: list[str] = field(default_factory=list)
    deferred_indexes: list[str] = field(default_factory=list)  # missing, with a marker
    target_key: str = ""
    orphans: list[tuple[Any, ...]] = field(default_factory=list)  # raw key values

    @property
    def table(self) -> TargetTable:
        return table_of(self.state)

    @property
    def needs_full_reexport(self) -> bool:
        return not self.exists or not self.key_columns_ok or bool(self.columns_to_restore)


@dataclass
class Scan:
    report: VerifyReport
    exports: dict[str, ExportCheck]
    tracked: dict[str, dict[str, TrackedSource]]  # source → key → tracking
    affected: dict[str, set[str]]  # source → keys a repair re-exports

    def affect(self, source: str, key: str) -> None:
        self.affected.setdefault(source, set()).add(key)


def key_text_of(raw: Any) -> str:
    """The engine's key for a stored source key (bytes keys decode with surrogateescape)."""
    if isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", "surrogateescape")


def export_checks(
    execution: FlowExecution, setup_plan: FlowSetupPlan, notes: list[str] | None = None
) -> dict[str, ExportCheck]:
    """The Postgres exports to compare with tracking. A custom target's storage is the
    user's connector's, which cocod cannot read back: it is named in ``notes`` instead."""
    out: dict[str, ExportCheck] = {}
    for item in setup_plan.targets:
        if item.new is None or item.export_name is None:
            continue
        if custom_target.is_custom_state(item.new):
            if notes is not None:
                notes.append(f"export {item.export_name}: custom target, not verified")
            continue
        out[item.export_name] = ExportCheck(
            plan=execution.plan.exports[item.export_name],
            state=item.new,
            is_user_managed=item.change.status == USER_MANAGED,
            schema_version=item.schema_version,
            target_signature=item.target_signature,
            target_key=item.key,
        )
    return out


async def compare_tables(
    conn: Connection,
    schema: str,
    flow_id: int,
    sources: dict[str, int],
    exports: dict[str, ExportCheck],
    report: VerifyReport,
    deferred: dict[str, list[str]] | None = None,
) -> Scan:
    """Tracking vs tables, inside the caller's (REPEATABLE READ) transaction.

    ``deferred``: the flow's deferred-index markers, read in that same snapshot; an index
    missing under a marker is an initial load's (pending work), not drift."""
    scan = Scan(report, exports, {name: {} for name in sources}, {})
    by_id = {source_id: name for name, source_id in sources.items()}
    expected: dict[str, dict[str, tuple[str, str, str]]] = {name: {} for name in exports}
    query = (
        "SELECT source_id, source_key, ordinal_mtime_ns, ordinal_size, content_fp, logic_fp, "
        f"target_keys FROM {quote_ident(schema)}.tracking WHERE flow_id = $1"
    )
    async for r in (await conn.prepare(query)).cursor(flow_id, prefetch=CURSOR_PREFETCH):
        source = by_id.get(r["source_id"])
        if source is None:
            continue  # a retired source: setup cleans it up
        key = key_text_of(r["source_key"])
        ordinal = (r[2], r[3]) if r[2] is not None else None
        scan.tracked[source][key] = TrackedSource(r["source_key"], ordinal, r[4], r[5])
        report.bump("tracking_rows")
        for export_name, check in exports.items():
            entry = (r["target_keys"] or {}).get(export_name)
            if not entry or entry.get("target") != check.target_signature:
                continue
            claimed = expected[export_name]
            for key_text, value_fp in entry.get("keys", {}).items():
                if key_text in claimed:
                    report.finding("shared_keys", export_name).add(
                        f"{key_text} ({claimed[key_text][1]}, {key})"
                    )
                claimed[key_text] = (source, key, value_fp)
    for export_name, check in exports.items():
        marked = (deferred or {}).get(check.target_key, [])
        await _compare_table(conn, scan, check, expected[export_name], marked)
    return scan


async def _compare_table(
    conn: Connection,
    scan: Scan,
    check: ExportCheck,
    expected: dict[str, tuple[str, str, str]],
    deferred: list[str],
) -> None:
    report, export = scan.report, check.plan
    name, table = export.name, check.table
    check.exists = await target_sql.table_exists(conn, table)
    if not check.exists:
        report.finding("missing_table", name).add(table.display)
        _all_missing(scan, name, expected)
        return
    actual = await target_sql.table_columns(conn, table)
    declared = [*check.state["key_columns"], *check.state["value_columns"]]
    for column, sql_type in declared:
        found = actual.get(column)
        if found != target_sql.normalize_sql_type(sql_type):
            report.finding("column_mismatch", name).add(
                f"{column}: declared {sql_type}, found {found or 'no column'}"
            )
            if [column, sql_type] in check.state["key_columns"]:
                check.key_columns_ok = False
            else:
                check.columns_to_restore.append((column, sql_type))
    if not check.is_user_managed:
        present = await target_sql.table_indexes(conn, table)
        for index in check.state.get("vector_indexes", []):
            if index["name"] in present:
                continue
            if index["name"] in deferred:
                check.deferred_indexes.append(index["name"])
                report.finding("deferred_index", name).add(index["name"])
            else:
                check.missing_indexes.append(index["name"])
                report.finding("missing_index", name).add(index["name"])
    if not check.key_columns_ok:
        report.notes.append(f"{name}: key columns differ from the declared ones; rows not compared")
        _all_missing(scan, name, expected)
        return
    await _stream_rows(conn, scan, check, expected, actual)


def _all_missing(scan: Scan, export: str, expected: dict[str, tuple[str, str, str]]) -> None:
    finding = scan.report.finding("missing_rows", export)
    for key_text, (source, key, _) in expected.items():
        finding.add(f"{key_text} (from {key})")
        scan.affect(source, key)


async def _stream_rows(
    conn: Connection,
    scan: Scan,
    check: ExportCheck,
    expected: dict[str, tuple[str, str, str]],
    actual: dict[str, str],
) -> None:
    report, export = scan.report, check.plan
    sql_types = dict(map(tuple, check.state["key_columns"] + check.state["value_columns"]))
    values = [
        (n, t, actual[n])
        for n, t in zip(export.value_fields, export.value_types, strict=True)
        if n in actual
    ]
    restored = {c for c, _ in check.columns_to_restore}
    exact = not restored and all(_reads_back_exactly(t, sql_types[n]) for n, t, _ in values)
    if not exact and values:
        report.notes.append(
            f"{export.name}: values not compared with tracking (columns stored as "
            "jsonb/halfvec do not read back exactly, or a column differs)"
        )
    dims = [
        (i, t.dimension)
        for i, (_, t, _) in enumerate(values)
        if t.kind == "Vector" and t.dimension is not None
    ]
    vector_columns = {i for i, (_, t, _) in enumerate(values) if t.kind == "Vector"}
    n_keys = len(export.key_fields)
    columns = [*export.key_fields, *(n for n, _, _ in values)]
    sql = target_sql.select_rows_sql(check.table, columns)
    # Prepared outside the statement cache: a table altered behind cocod's back must not
    # fail the check with "cached statement plan is invalid".
    async for record in (await conn.prepare(sql)).cursor(prefetch=CURSOR_PREFETCH):
        report.bump("table_rows")
        raw_key = tuple(record[:n_keys])
        key_values = [
            _engine_value(v, t, sql_types[k])
            for v, t, k in zip(raw_key, export.key_types, export.key_fields, strict=True)
        ]
        key_text = key_to_json_text(key_values, export.key_types)
        claim = expected.pop(key_text, None)
        if claim is None:
            report.finding("orphan_rows", export.name).add(key_text)
            check.orphans.append(raw_key)
            continue
        source, source_key, value_fp = claim
        row_values = [
            _as_array(v) if i in vector_columns else v for i, v in enumerate(record[n_keys:])
        ]
        bad_dim = next(
            (
                f"{values[i][0]} has {len(row_values[i])} dimensions, declared {d}"
                for i, d in dims
                if row_values[i] is not None and len(row_values[i]) != d
            ),
            None,
        )
        if bad_dim is not None:
            report.finding("wrong_dimension", export.name).add(f"{key_text}: {bad_dim}")
            scan.affect(source, source_key)
        elif exact:
            fp = Fingerprinter().add(check.schema_version)
            for (column, vtype, _), v in zip(values, row_values, strict=True):
                fp.add(_engine_value(v, vtype, sql_types[column]))
            if fp.digest().hex() != value_fp:
                report.finding("altered_rows", export.name).add(f"{key_text} (from {source_key})")
                scan.affect(source, source_key)
        elif restored:
            scan.affect(source, source_key)
    if expected:
        finding = report.finding("missing_rows", export.name)
        for key_text, (source, key, _) in expected.items():
            finding.add(f"{key_text} (from {key})")
            scan.affect(source, key)


def _reads_back_exactly(vtype: ValueType, sql_type: str) -> bool:
    if sql_type == "jsonb":
        return False
    if vtype.kind == "Vector":
        elem = vtype.element
        return sql_type.startswith("vector(") and elem is not None and elem.kind == "Float32"
    return vtype.kind in _EXACT_KINDS


def _engine_value(value: Any, vtype: ValueType, sql_type: str) -> Any:
    """A value read from the table, in the form the engine fingerprinted when writing it."""
    if value is None:
        return None
    if sql_type == "jsonb":
        return from_json_value(value, vtype)
    if vtype.kind == "Range":
        return (value.lower, value.upper)
    if vtype.kind == "Vector":
        return _as_array(value)
    return value


def _as_array(value: Any) -> Any:
    """pgvector's Vector/HalfVector (or a list from jsonb) as a float32 array."""
    if value is None or isinstance(value, np.ndarray):
        return value
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


async def check_files(execution: FlowExecution, scan: Scan, progress: Progress | None) -> None:
    """Every source's files against its tracking: new, changed, rewritten in place, gone."""
    for name, runtime in execution.sources.items():
        if not isinstance(runtime.reader, LocalFileReader):
            scan.report.notes.append(f"source {name}: custom source, files not checked")
            continue
        try:
            listed = await runtime.reader.list_rows()
        except SourceError as e:
            scan.report.notes.append(f"source {name}: files not checked: {e}")
            continue
        checker = _SourceFiles(
            scan, name, runtime.reader, listed, execution.plan.sources[name].logic_fp
        )
        await checker.run(progress)


class _SourceFiles:
    def __init__(
        self, scan: Scan, name: str, reader: Any, listed: dict[str, Ordinal], logic_fp: bytes
    ) -> None:
        self.scan = scan
        self.name = name
        self.reader = reader
        self.listed = listed
        self.logic_fp = logic_fp
        self.tracked = scan.tracked.get(name, {})
        self.unreadable = 0
        self.limiter = anyio.Semaphore(READ_CONCURRENCY)

    def found(self, kind: str, key: str) -> None:
        self.scan.report.finding(kind, self.name).add(key)
        self.scan.affect(self.name, key)

    async def run(self, progress: Progress | None) -> None:
        self.scan.report.bump("files", len(self.listed))
        for key in self.listed:
            if key not in self.tracked:
                self.found("untracked_files", key)
        keys = list(self.tracked)
        for start in range(0, len(keys), 512):
            async with anyio.create_task_group() as tg:
                for key in keys[start : start + 512]:
                    tg.start_soon(self.check, key)
            if progress is not None:
                done = min(len(keys), start + 512)
                await call_progress(
                    progress, {"stage": "verify.files", "source": self.name, "done": done}
                )
        if self.unreadable:
            self.scan.report.notes.append(
                f"source {self.name}: {self.unreadable} file(s) could not be read"
            )

    async def check(self, key: str) -> None:
        t = self.tracked[key]
        async with self.limiter:
            try:
                row = await self.reader.read_row(key)
            except RowError:
                self.unreadable += 1
                return
        if row is None:  # gone, or now excluded: a pass deletes its rows either way
            self.found("gone_files", key)
        elif row.content_fp != t.content_fp:
            same_ordinal = t.ordinal is not None and t.ordinal == self.listed.get(key)
            self.found("stale_content" if same_ordinal else "changed_files", key)
        elif t.logic_fp != self.logic_fp:
            self.found("outdated_logic", key)


async def call_progress(progress: Progress, event: dict[str, Any]) -> None:
    result = progress({"event": "progress", **event})
    if result is not None:
        await result
