"""The SQL of deferring a target's vector indexes during an initial load.

Why: every row inserted into a table with an HNSW index walks the graph to link itself
in; with the tiny embedder that costs about 0.6 ms of server CPU per row, most of an
initial load's database time, while ``CREATE INDEX`` over the same rows after the load
costs a fraction of it (pgvector's documentation says as much: load first, then index).
IVFFlat gains more: its lists are computed from the rows present when it is built, so
one built over an empty table has meaningless centroids.

Only the statements live here; when a load defers, and the marker that makes it crash
safe, are :mod:`cocod.storage.deferred_indexes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cocod.engine.setup import FlowSetupPlan, TargetItem
from cocod.executors.postgres.ddl import create_index_sql, drop_index_sql, is_adopted
from cocod.executors.postgres.table import TargetTable, table_of

DEFERRABLE_METHODS = ("hnsw", "ivfflat")

BUILD_MEMORY_FLOOR = "64MB"
BUILD_MEMORY_CAP = "1GB"
"""``maintenance_work_mem`` for a deferred build: twice the table's size on disk plus the
floor, capped. pgvector builds an HNSW graph in that memory and slows down several times
(with a NOTICE that the graph no longer fits) when it runs out; the table's size bounds
the graph's (the vectors are in it, besides the text). Set with ``SET LOCAL``, so only the
build's transaction uses it; the server's own setting wins when it is larger.
``max_parallel_maintenance_workers`` is left at the server's setting: pgvector's parallel
build follows it, and a bigger value than the cores there are only adds contention.

A parallel build keeps its graph in dynamic shared memory, which a container may cap
(Docker gives ``/dev/shm`` 64 MiB): it then fails with "could not resize shared memory
segment" (``disk_full`` or ``out_of_memory``). :meth:`IndexDeferral.build_statements`
with ``serial=True`` is the retry for that: no parallel workers, and the floor's memory,
which a serial build takes from the backend's own memory instead."""

BUILD_LOCK_TIMEOUT = "5s"
DROP_LOCK_TIMEOUT = "2s"
"""``DROP INDEX`` needs the table's ACCESS EXCLUSIVE lock, which queues every reader
behind it: a load that cannot get it within this time keeps the index and writes through
it. A build waits longer for writers of the table (only someone else's: the flow's own
writer is the one building); one that cannot get it leaves the marker for the next pass."""


def is_deferrable(state: dict[str, Any]) -> bool:
    """A table whose indexes cocod may drop and re-create: one it created and manages.

    Never one the user manages (``setup_by_user``) nor one it adopted (``adopt_existing``):
    their indexes may be in use by the user's own queries and are not cocod's to touch.
    """
    if state.get("kind") != "Postgres" or state.get("setup_by_user") or is_adopted(state):
        return False
    return any(i.get("using") in DEFERRABLE_METHODS for i in state.get("vector_indexes", []))


@dataclass(frozen=True)
class IndexDeferral:
    """One table's vector indexes, as a load drops them and its end builds them."""

    target_key: str  # the setup key of the target (``Postgres:schema.table``)
    table: TargetTable
    indexes: tuple[dict[str, Any], ...]

    @property
    def display(self) -> str:
        return self.table.display

    @property
    def index_names(self) -> list[str]:
        return [i["name"] for i in self.indexes]

    def only(self, names: list[str]) -> IndexDeferral:
        """The same table with only the indexes named (a marker's, say)."""
        return IndexDeferral(
            self.target_key, self.table, tuple(i for i in self.indexes if i["name"] in names)
        )

    def has_rows_sql(self) -> str:
        """One value, whether the table has any row: an ``EXISTS`` probe reads at most one
        row of any table, where ``count(*)`` reads them all."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.table.qualified})"

    def drop_statements(self) -> list[str]:
        return [f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"] + [
            drop_index_sql(self.table, i) for i in self.indexes
        ]

    def build_statements(self, *, lock_timeout: bool = True, serial: bool = False) -> list[str]:
        """Idempotent (``IF NOT EXISTS``), so a build that comes second does nothing.
        ``lock_timeout=False`` inside setup's transaction, which waits for locks as
        every other statement of setup does. ``serial``: the retry of a parallel build
        that ran out of shared memory (see :data:`BUILD_MEMORY_CAP`)."""
        timeout = [f"SET LOCAL lock_timeout = '{BUILD_LOCK_TIMEOUT}'"] if lock_timeout else []
        creates = [create_index_sql(self.table, i) for i in self.indexes]
        if serial:
            return [
                *timeout,
                "SET LOCAL max_parallel_maintenance_workers = 0",
                f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY_FLOOR}'",
                *creates,
            ]
        qualified = self.table.qualified.replace("'", "''")
        memory = (
            "SELECT set_config('maintenance_work_mem', (greatest("
            "pg_size_bytes(current_setting('maintenance_work_mem')), least("
            f"pg_size_bytes('{BUILD_MEMORY_CAP}'), "
            f"2 * pg_table_size('{qualified}'::regclass) + pg_size_bytes('{BUILD_MEMORY_FLOOR}')"
            ")) / 1024)::bigint::text || 'kB', true)"
        )
        return [*timeout, memory, *creates]


def deferral_for(target_key: str, state: dict[str, Any]) -> IndexDeferral | None:
    """The deferral of a target's recorded state; None when it has nothing to defer."""
    if not is_deferrable(state):
        return None
    indexes = tuple(i for i in state["vector_indexes"] if i.get("using") in DEFERRABLE_METHODS)
    return IndexDeferral(target_key, table_of(state), indexes)


def item_deferral(item: TargetItem, names: list[str]) -> IndexDeferral | None:
    """How to build the deferred indexes ``names`` of a target a setup plan keeps: as the
    flow declares them now, or, for a table now managed by the user, as cocod dropped
    them (it gives back what it took)."""
    if item.new is None or item.new.get("kind") != "Postgres":
        return None
    if item.new.get("setup_by_user") and item.old is not None:
        deferral = deferral_for(item.key, item.old)
        return None if deferral is None else deferral.only(names)
    return deferral_for(item.key, item.new)


def deferred_builds(setup_plan: FlowSetupPlan) -> list[IndexDeferral]:
    """What setup builds for the markers it finds (:attr:`FlowSetupPlan.deferred_index_builds`)."""
    deferred = setup_plan.deferred_index_builds
    out = []
    for item in setup_plan.targets:
        names = deferred.get(item.key)
        deferral = item_deferral(item, names) if names else None
        if deferral is not None:
            out.append(deferral)
    return out
