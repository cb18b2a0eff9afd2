"""Update statistics in v0's shape (``IndexUpdateInfo``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_LABELS = (
    ("num_insertions", "added"),
    ("num_updates", "updated"),
    ("num_reprocesses", "reprocessed"),
    ("num_deletions", "deleted"),
    ("num_no_change", "no change"),
    ("num_errors", "errors"),
)
BAR_WIDTH = 40


@dataclass
class SourceUpdateStats:
    num_no_change: int = 0
    num_insertions: int = 0
    num_deletions: int = 0
    num_updates: int = 0
    num_reprocesses: int = 0
    num_errors: int = 0
    num_starts: int = 0
    num_ends: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name, _ in _LABELS)

    @property
    def has_changes(self) -> bool:
        return bool(
            self.num_insertions
            or self.num_deletions
            or self.num_updates
            or self.num_reprocesses
            or self.num_errors
        )

    def merge(self, other: SourceUpdateStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_no_change": self.num_no_change,
            "num_insertions": self.num_insertions,
            "num_deletions": self.num_deletions,
            "num_updates": self.num_updates,
            "num_reprocesses": self.num_reprocesses,
            "num_errors": self.num_errors,
            "processing": {"num_starts": self.num_starts, "num_ends": self.num_ends},
        }

    def describe(self) -> str:
        """v0's line: a 40-cell bar, ``done/total source rows`` and non-zero counters."""
        total = self.total
        if total == 0:
            return "No input data"
        done = total - (self.num_starts - self.num_ends)
        filled = BAR_WIDTH * done // total
        bar = "█" * filled + " " * (BAR_WIDTH - filled)
        counts = ", ".join(
            f"{getattr(self, name)} {label}" for name, label in _LABELS if getattr(self, name)
        )
        return f"▕{bar}▏{done}/{total} source rows: {counts}"


@dataclass
class IndexUpdateInfo:
    sources: dict[str, SourceUpdateStats] = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_dict() for name, s in self.sources.items()}

    def __str__(self) -> str:
        return "\n".join(f"{name}: {s.describe()}" for name, s in self.sources.items())

    def __repr__(self) -> str:
        return f"IndexUpdateInfo({self.stats!r})"


DURATION_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
"""Pass durations: a hint pass of one file takes tens of ms, a first index an hour."""


@dataclass
class DurationHistogram:
    """Counts of pass durations per bucket (Prometheus' shape: cumulative ``le`` buckets)."""

    bounds: tuple[float, ...] = DURATION_BUCKETS_SECONDS
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_SECONDS) + 1))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if seconds <= b), len(self.bounds))
        self.counts[index] += 1
        self.count += 1
        self.total += seconds

    def merge(self, other: DurationHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.count += other.count
        self.total += other.total

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of observations <= le), …, ("+Inf", count)]``."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class PassCounters:
    """What a live updater's source loops did, for metrics: monotonic while it lives."""

    watcher_events: int = 0
    """Change hints received from the watcher (file keys, folder keys, rescan requests)."""
    rescans: int = 0
    """Full passes after the initial one (periodic rescans, bursts, the root coming back)."""
    passes: int = 0
    """Passes that succeeded (the duration histogram counts these)."""
    errors: dict[str, int] = field(default_factory=dict)
    """By kind: ``row`` (a file failed), ``source`` (listing), ``database``, ``pass``."""
    durations: DurationHistogram = field(default_factory=DurationHistogram)
    rows_written: int = 0
    """Source rows whose target rows were written (added, updated, reprocessed)."""
    rows_deleted: int = 0
    """Source rows whose target rows were deleted (the file vanished or is excluded)."""

    def count_error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n

    def count_pass(self, stats: SourceUpdateStats, seconds: float) -> None:
        self.passes += 1
        self.durations.observe(seconds)
        self.rows_written += stats.num_insertions + stats.num_updates + stats.num_reprocesses
        self.rows_deleted += stats.num_deletions
        if stats.num_errors:
            self.count_error("row", stats.num_errors)

    def merge(self, other: PassCounters) -> None:
        self.watcher_events += other.watcher_events
        self.rescans += other.rescans
        self.passes += other.passes
        self.rows_written += other.rows_written
        self.rows_deleted += other.rows_deleted
        for kind, n in other.errors.items():
            self.count_error(kind, n)
        self.durations.merge(other.durations)

    def copy(self) -> PassCounters:
        out = PassCounters()
        out.merge(self)
        return out
