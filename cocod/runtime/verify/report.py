"""What ``verify`` found: findings per kind and place, with counts and sample keys.

Kinds are split in two. *Drift* is damage the engine would never notice on its own (a row
deleted behind its back, a file rewritten with the same mtime and size); *pending* is
work the next ordinary pass does anyway (a new file, an edited one). Both are reported;
``has_drift`` looks at drift only, so a live instance mid-update is not "broken".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_SAMPLES = 5

DRIFT_KINDS: dict[str, str] = {
    "missing_table": "target table does not exist",
    "column_mismatch": "declared column missing or of another type",
    "missing_index": "declared vector index missing",
    "missing_rows": "rows tracking says were written are not in the table",
    "orphan_rows": "rows in the table that no tracked source row produced",
    "wrong_dimension": "vector values whose dimension differs from the declared one",
    "altered_rows": "rows whose values differ from what cocod wrote",
    "stale_content": "files whose content changed while (mtime, size) did not",
    "gone_files": "tracking rows of files that no longer exist",
    "shared_keys": "target keys claimed by two source rows (the flow's keys collide)",
}
PENDING_KINDS: dict[str, str] = {
    "untracked_files": "files not indexed yet",
    "changed_files": "files changed since they were indexed",
    "outdated_logic": "rows indexed by an older version of the flow",
    "deferred_index": "vector index dropped for an initial load, built when it ends",
}


@dataclass
class Finding:
    kind: str
    where: str  # the export (table checks) or the source (file checks)
    count: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def is_drift(self) -> bool:
        return self.kind in DRIFT_KINDS

    def add(self, sample: str, count: int = 1) -> None:
        self.count += count
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "count": self.count,
            "samples": list(self.samples),
            "is_drift": self.is_drift,
        }


@dataclass
class RepairSummary:
    tables_created: list[str] = field(default_factory=list)
    columns_restored: list[str] = field(default_factory=list)
    indexes_created: list[str] = field(default_factory=list)
    keys_reprocessed: dict[str, int] = field(default_factory=dict)  # source → keys
    full_passes: list[str] = field(default_factory=list)  # sources re-exported whole
    orphans_deleted: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables_created": self.tables_created,
            "columns_restored": self.columns_restored,
            "indexes_created": self.indexes_created,
            "keys_reprocessed": self.keys_reprocessed,
            "full_passes": self.full_passes,
            "orphans_deleted": self.orphans_deleted,
            "stats": self.stats,
        }


@dataclass
class VerifyReport:
    flow: str
    checked: dict[str, int] = field(default_factory=dict)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    repair: RepairSummary | None = None
    after: VerifyReport | None = None
    """The verification run after the repair."""

    def finding(self, kind: str, where: str) -> Finding:
        assert kind in DRIFT_KINDS or kind in PENDING_KINDS, kind
        found = self.findings.get((kind, where))
        if found is None:
            found = self.findings[(kind, where)] = Finding(kind, where)
        return found

    def count(self, kind: str) -> int:
        return sum(f.count for (k, _), f in self.findings.items() if k == kind)

    @property
    def has_drift(self) -> bool:
        return any(f.is_drift and f.count for f in self.findings.values())

    @property
    def is_clean(self) -> bool:
        return not any(f.count for f in self.findings.values())

    def bump(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def describe(self) -> str:
        checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(self.checked.items()))
        lines = [f"verify {self.flow}: checked {checked or 'nothing'}"]
        for f in sorted(self.findings.values(), key=lambda f: (not f.is_drift, f.kind, f.where)):
            if not f.count:
                continue
            label = "DRIFT  " if f.is_drift else "pending"
            text = DRIFT_KINDS.get(f.kind) or PENDING_KINDS[f.kind]
            lines.append(f"  {label} {f.kind} in {f.where}: {f.count} ({text})")
            lines.extend(f"      e.g. {s}" for s in f.samples)
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.is_clean:
            lines.append("  no drift: the target tables match tracking and the files")
        elif not self.has_drift:
            lines.append("  no drift; pending work is done by the next update pass")
        if self.repair is not None:
            r = self.repair
            lines.append(
                f"  repaired: {len(r.tables_created)} table(s) created, "
                f"{len(r.columns_restored)} column(s) restored, "
                f"{len(r.indexes_created)} index(es) created, "
                f"{sum(r.keys_reprocessed.values())} source row(s) reprocessed"
                + (f" (full pass over {', '.join(r.full_passes)})" if r.full_passes else "")
                + f", {r.orphans_deleted} orphan row(s) deleted"
            )
        if self.after is not None:
            lines.append(
                "  after repair: clean"
                if not self.after.has_drift
                else "  after repair: STILL DRIFTING\n"
                + "\n".join("  " + line for line in self.after.describe().splitlines()[1:])
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "checked": dict(self.checked),
            "has_drift": self.has_drift,
            "is_clean": self.is_clean,
            "findings": [f.to_dict() for f in self.findings.values() if f.count],
            "notes": list(self.notes),
            "repair": self.repair.to_dict() if self.repair else None,
            "after": self.after.to_dict() if self.after else None,
        }
