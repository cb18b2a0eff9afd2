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
