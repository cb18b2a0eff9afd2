"""The seams between the engine and the outside world (sources, state store, targets).

The engine speaks only these Protocols and dataclasses; ``runtime`` wires in the real
LocalFile reader and the Postgres-backed store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Ordinal = tuple[int, int]
"""(mtime_ns, size): cheap to read, compared before any content is hashed."""


@dataclass
class SourceRow:
    value: dict[str, Any]
    ordinal: Ordinal | None  # None: too recent to trust (see LocalFileReader.read_row)
    content_fp: bytes


class SourceReader(Protocol):
    async def list_rows(self) -> dict[str, Ordinal]:
        """Every current key with its ordinal; raises SourceError if the source is gone."""
        ...

    async def read_row(self, key: str) -> SourceRow | None:
        """The row's value, or None when it no longer exists (or is now excluded)."""
        ...


@dataclass
class TrackedRow:
    """What the store remembers about one processed source row."""

    ordinal: Ordinal | None
    content_fp: bytes | None
    logic_fp: bytes | None
    target_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per export: {"target": signature of the table, "keys": {key text: value fp}}."""
    memo_keys: list[bytes] = field(default_factory=list)
    uuids: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ExportWrite:
    upserts: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[list[Any]] = field(default_factory=list)


@dataclass
class RowCommit:
    """Everything one source row changes; the store applies it in one transaction."""

    source_id: int
    key: str
    tracked: TrackedRow | None  # None: the row is gone, delete its tracking
    writes: dict[str, ExportWrite] = field(default_factory=dict)
    memo_entries: dict[bytes, bytes] = field(default_factory=dict)
    released_memo_keys: list[bytes] = field(default_factory=list)
    is_refresh: bool = False
    """Only the ordinal changed: no target, memo or key moves (the store skips that work)."""


@dataclass
class ListingDiff:
    """A full listing compared with the tracking (see :meth:`StateStore.diff_listing`)."""

    changed: list[str]
    """Listed keys that are new, or whose ordinal or logic fingerprint differs."""
    gone: list[str]
    """Tracked keys the listing no longer has."""


class StateStore(Protocol):
    async def load_ordinals(
        self, source_id: int, near_keys: Sequence[str] | None = None
    ) -> dict[str, tuple[Ordinal | None, bytes | None]]:
        """All tracked rows of the source, or only ``near_keys`` and keys under them.

        With ``near_keys`` the cost must follow the number of keys, not of tracked rows:
        a burst of events must not scan the source's tracking once per key.
        """
        ...

    async def diff_listing(
        self, source_id: int, listed: Mapping[str, Ordinal], logic_fp: bytes
    ) -> ListingDiff:
        """Only what differs between a full listing and the tracking, for a caller that
        holds a listing already.

        A pass does not call this: it starts reading the source's tracked listing (key,
        ordinal, logic fingerprint per row, from a covering index) before its stat()
        walk, so the server's read runs while the walk runs here, and compares the two
        in this process afterwards (one dict look-up per tracked row). Sending the
        listing to be joined on the server would put that work after the walk, on the
        pass's path. Here the comparison may run on either side; only what differs is
        returned.
        """
        ...

    async def load_tracked_rows(
        self, source_id: int, keys: Sequence[str]
    ) -> dict[str, TrackedRow]: ...

    async def commit_rows(self, commits: Sequence[RowCommit]) -> None:
        """Apply all commits atomically (one transaction)."""
        ...

    async def memo_lookup(self, fps: Sequence[bytes]) -> dict[bytes, bytes]: ...

    async def collect_memo_garbage(self, retention_seconds: float) -> int: ...

    def is_transient_error(self, error: BaseException) -> bool:
        """Whether retrying the same commit may succeed (lost connection, conflict).

        The store knows its driver's errors; the engine never imports the driver.
        """
        ...

    def is_unavailable_error(self, error: BaseException) -> bool:
        """Whether the database cannot be reached at all (a pass should stop, not retry
        every row)."""
        ...
