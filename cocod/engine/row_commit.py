"""What one source row's commit holds, from what its evaluation collected.

Why apart from the pass (:mod:`cocod.engine.indexer`): diffing the collected rows against
the keys the tracking row recorded, fingerprinting their values and keeping row UUIDs
stable is pure computation with its own rules (null and duplicate primary keys are row
errors), while the pass is about scheduling, I/O and progress.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from cocod.engine.fingerprint import Fingerprinter
from cocod.engine.interfaces import ExportWrite, Ordinal, RowCommit, TrackedRow
from cocod.engine.plan import ExportPlan
from cocod.engine.values import key_from_json_text, key_to_json_text
from cocod.errors import DuplicateKeyError, RowError

if TYPE_CHECKING:
    from cocod.engine.evaluator import RowMemo
    from cocod.engine.indexer import SourcePassContext


def recorded_keys(export: ExportPlan, tracked: TrackedRow) -> dict[str, str]:
    """Keys (→ value fingerprints) this row wrote to the export's *current* table."""
    entry = tracked.target_keys.get(export.name)
    if not entry or entry.get("target") != export.target_signature:
        return {}
    keys: dict[str, str] = entry.get("keys", {})
    return keys


def keys_of(export: ExportPlan, key_texts: dict[str, str]) -> list[list[Any]]:
    return [key_from_json_text(k, export.key_types) for k in key_texts]


def build_commit(
    ctx: SourcePassContext,
    key: str,
    ordinal: Ordinal | None,
    content_fp: bytes,
    collected: dict[str, list[dict[str, Any]]],
    memo: RowMemo,
    tracked: TrackedRow | None,
    rewrite: bool,
) -> RowCommit:
    """The row's commit: upserts of the collected rows whose values changed (all of them
    when ``rewrite``: a reexport or full reprocess), deletes of the keys it no longer
    collects, the new tracking row and the memo entries added and released."""
    writes: dict[str, ExportWrite] = {}
    target_keys: dict[str, dict[str, Any]] = {}
    old_uuids = tracked.uuids if tracked else {}
    new_uuids: dict[str, list[str]] = {}
    for export in ctx.plan.exports.values():
        rows = collected.get(export.export.collector.name, [])
        old_keys = recorded_keys(export, tracked) if tracked else {}
        new_keys: dict[str, str] = {}
        write = ExportWrite()
        uuid_field = export.uuid_field
        for row in rows:
            if uuid_field is not None:
                row[uuid_field] = _stable_uuid(row, uuid_field, old_uuids, new_uuids)
            key_values = [row.get(k) for k in export.key_fields]
            for name, value in zip(export.key_fields, key_values, strict=True):
                if value is None:
                    raise RowError(
                        f"flow {ctx.flow_name!r} source {ctx.source.name!r} key {key!r}: "
                        f"export {export.name!r} collected a row whose primary key field "
                        f"{name!r} is null"
                    )
            key_text = key_to_json_text(key_values, export.key_types)
            if key_text in new_keys:
                raise DuplicateKeyError(
                    f"flow {ctx.flow_name!r} source {ctx.source.name!r} key {key!r}: export "
                    f"{export.name!r} collected two rows with primary key {key_text} "
                    f"({', '.join(export.key_fields)}); make the key unique per row"
                )
            fp = Fingerprinter().add(export.schema_version)
            for v in export.value_fields:
                fp.add(row.get(v))
            value_fp = fp.digest().hex()
            new_keys[key_text] = value_fp
            if rewrite or old_keys.get(key_text) != value_fp:
                write.upserts.append(row)
        stale = [k for k in old_keys if k not in new_keys]
        write.deletes = keys_of(export, dict.fromkeys(stale, ""))
        if write.upserts or write.deletes:
            writes[export.name] = write
        target_keys[export.name] = {"target": export.target_signature, "keys": new_keys}
    new_tracked = TrackedRow(
        ordinal=ordinal,
        content_fp=content_fp,
        logic_fp=ctx.source.logic_fp,
        target_keys=target_keys,
        memo_keys=sorted(memo.used),
        uuids=new_uuids,
    )
    released = sorted(set(tracked.memo_keys) - memo.used) if tracked else []
    return RowCommit(ctx.source_id, key, new_tracked, writes, memo.new_entries, released)


def _stable_uuid(
    row: dict[str, Any],
    uuid_field: str,
    old: dict[str, list[str]],
    new: dict[str, list[str]],
) -> uuid.UUID:
    """The n-th row with the same other values keeps the n-th UUID it had before."""
    fp = Fingerprinter()
    for name in sorted(row):
        if name != uuid_field:
            fp.add(name).add(row[name])
    h = fp.digest().hex()
    assigned = new.setdefault(h, [])
    previous = old.get(h, [])
    value = previous[len(assigned)] if len(assigned) < len(previous) else str(uuid.uuid4())
    assigned.append(value)
    return uuid.UUID(value)
