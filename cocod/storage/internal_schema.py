"""The internal schema's tables, and creating or migrating them once per database.

All flows share three tables in the internal schema (``cocod`` unless
``db_schema_name`` says otherwise), partitioned by a numeric ``flow_id``: no per-flow DDL,
no identifier-length limits on flow names, and dropping a flow is a few DELETEs.

    setup_metadata (flow_name, resource) → state jsonb      what setup last applied
    tracking (flow_id, source_id, source_key bytea)         one row per processed source row
    memo (flow_id, fp) → value bytea                         memoized function results
    leases (flow_id) → epoch, holder                         the flow's writer (storage.leases)

Source keys are stored as the file name's own bytes (``key.encode('utf-8',
'surrogateescape')``, what ``os.fsencode`` gives): Postgres text cannot hold the lone
surrogates a name that is not UTF-8 decodes to, and bytea compares byte-wise, so the keys
under a folder are one range scan of the primary key with no collation in the way.
"""

from __future__ import annotations

from cocod.flow.naming import quote_ident
from cocod.storage.lease_table import leases_table_statement
from cocod.storage.pool import Connection

INTERNAL_SCHEMA_LOCK_KEY = 0x636F636F642D31
"""pg_advisory_xact_lock key serialising creation and migration of the internal tables."""


def internal_schema_statements(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.setup_metadata (
            flow_name text NOT NULL,
            resource text NOT NULL,
            state jsonb NOT NULL,
            PRIMARY KEY (flow_name, resource))""",
        f"CREATE SEQUENCE IF NOT EXISTS {s}.flow_id_seq",
        f"""CREATE TABLE IF NOT EXISTS {s}.tracking (
            flow_id integer NOT NULL,
            source_id integer NOT NULL,
            source_key bytea NOT NULL,
            ordinal_mtime_ns bigint,
            ordinal_size bigint,
            content_fp bytea,
            logic_fp bytea,
            target_keys jsonb NOT NULL,
            memo_keys bytea[] NOT NULL,
            uuids jsonb NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (flow_id, source_id, source_key))""",
        # fastupdate off: with GIN's pending list on, every `@>` lookup (each memo mark and
        # collection) scans the whole list of entries not yet merged into the tree.
        f"CREATE INDEX IF NOT EXISTS tracking_memo_keys ON {s}.tracking USING gin (memo_keys) "
        "WITH (fastupdate = off)",
        # A full pass compares the listing with (key, ordinal, logic fp) of every tracked
        # row: an index-only scan of this reads a tenth of the pages the rows fill.
        f"CREATE INDEX IF NOT EXISTS tracking_ordinals ON {s}.tracking "
        "(flow_id, source_id, source_key) INCLUDE (ordinal_mtime_ns, ordinal_size, logic_fp)",
        f"""CREATE TABLE IF NOT EXISTS {s}.memo (
            flow_id integer NOT NULL,
            fp bytea NOT NULL,
            value bytea NOT NULL,
            orphaned_at timestamptz,
            PRIMARY KEY (flow_id, fp))""",
        f"CREATE INDEX IF NOT EXISTS memo_orphans ON {s}.memo (flow_id, orphaned_at) "
        "WHERE orphaned_at IS NOT NULL",
        # A database set up before leases existed gets this table from the first lease
        # taken on it (cocod.storage.leases.ensure_leases_table).
        leases_table_statement(schema),
    ]


def _migration_statements(schema: str) -> list[str]:
    """From the first layout (text keys, orphans remembered per process) to this one."""
    s = quote_ident(schema)
    return [
        f"ALTER TABLE {s}.tracking ALTER COLUMN source_key TYPE bytea "
        "USING convert_to(source_key, 'UTF8')",
        # Releases used to be remembered in memory only: mark what they lost, once.
        f"UPDATE {s}.memo m SET orphaned_at = now() WHERE orphaned_at IS NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {s}.tracking t WHERE t.flow_id = m.flow_id "
        "AND t.memo_keys @> ARRAY[m.fp])",
    ]


def _fastupdate_statements(schema: str) -> list[str]:
    """An index made before ``fastupdate = off``: turn it off and merge what is pending
    (turning it off alone leaves the list for lookups to scan until the next vacuum)."""
    index = f"{quote_ident(schema)}.tracking_memo_keys"
    return [
        f"ALTER INDEX {index} SET (fastupdate = off)",
        f"SELECT gin_clean_pending_list({_literal(index)}::regclass)",
    ]


_FASTUPDATE_OFF = (
    "(SELECT coalesce('fastupdate=off' = ANY(reloptions), false) FROM pg_class "
    "WHERE oid = to_regclass({index}))"
)
"""Whether the memo keys' GIN index exists with its pending list off (SQL, one value)."""


async def _layout(conn: Connection, schema: str) -> tuple[str | None, bool, bool | None]:
    """The tracking key's column type (``bytea`` when current, ``text`` when it needs
    migrating, None before any setup), whether the latest index exists, and whether the
    memo keys' index has ``fastupdate`` off (None when there is no such index); one query."""
    s = quote_ident(schema)
    row = await conn.fetchrow(
        "SELECT (SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attname = 'source_key' AND NOT attisdropped), "
        "to_regclass($2) IS NOT NULL, " + _FASTUPDATE_OFF.format(index="$3"),
        f"{s}.tracking",
        f"{s}.tracking_ordinals",
        f"{s}.tracking_memo_keys",
    )
    if row is None:
        return None, False, None
    found = row[0]
    return (None if found is None else str(found)), bool(row[1]), row[2]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def _is_layout_current(conn: Connection, schema: str) -> bool:
    """:func:`_layout` is ``("bytea", True, True)``, answered in one round trip.

    Every fresh process's first pass asks this. A statement without parameters goes
    through the simple query protocol (no prepare: one round trip instead of two), and its
    status says how many rows matched: ``SELECT 1`` when current, ``SELECT 0`` when not.
    """
    s = quote_ident(schema)
    status = await conn.execute(
        "SELECT 1 WHERE (SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = to_regclass({_literal(f'{s}.tracking')}) "
        "AND attname = 'source_key' AND NOT attisdropped) = 'bytea' "
        f"AND to_regclass({_literal(f'{s}.tracking_ordinals')}) IS NOT NULL "
        "AND " + _FASTUPDATE_OFF.format(index=_literal(f"{s}.tracking_memo_keys"))
    )
    return status == "SELECT 1"


async def ensure_internal_schema(conn: Connection, schema: str) -> bool:
    """Create or migrate the internal tables once, however many processes start together.

    Check first (one cheap query when all is done), then take a transaction-scoped
    advisory lock and check again: the processes that lose the race wait for the winner's
    commit and find nothing left to do, instead of colliding on CREATE TABLE. A database
    set up before an index was added gets it here (a short write lock on tracking), and
    one whose memo keys' GIN index has its pending list on gets it turned off.
    Returns whether this call changed anything.
    """
    if await _is_layout_current(conn, schema):
        return False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INTERNAL_SCHEMA_LOCK_KEY)
        current, has_index, fastupdate_off = await _layout(conn, schema)
        if current == "bytea" and has_index and fastupdate_off:
            return False
        if current not in (None, "bytea"):
            for stmt in _migration_statements(schema):
                await conn.execute(stmt)
        for stmt in internal_schema_statements(schema):
            await conn.execute(stmt)
        if fastupdate_off is False:  # the index was there, made with the pending list on
            for stmt in _fastupdate_statements(schema):
                await conn.execute(stmt)
    return True


async def internal_schema_exists(conn: Connection, schema: str) -> bool:
    found = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.setup_metadata"
    )
    return bool(found)
