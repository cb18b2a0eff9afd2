"""Custom targets (v0's ``@op.target_connector``) in the row transaction and the setup plan.

The connector below keeps its "external system" in a dict per directory key, and logs every
call, so each test can see what was called, how often, and in what order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cocod as cocoindex
from cocod.errors import FlowDefinitionError, SetupError
from cocod.runtime.bridge import bridge
from tests.conftest import SqlHelper, write

STORE: dict[str, dict[str, Any]] = {}
"""persistent key → {row key → value}: what the connector's system holds."""
CALLS: list[tuple[str, Any]] = []
FAIL_MUTATE: list[int] = [0]
"""How many next mutate calls raise."""
FAIL_SETUP: list[bool] = [False]
FAIL_AFTER_SETUP: list[bool] = [False]
"""apply_setup_change does its work, then raises (as if the process died right after)."""


class MemoryTarget(cocoindex.op.TargetSpec):
    name: str
    version: int = 1


@dataclasses.dataclass
class Entry:
    text: str
    size: int


@cocoindex.op.target_connector(spec_cls=MemoryTarget)
class MemoryTargetConnector:
    @staticmethod
    def get_persistent_key(spec: MemoryTarget, target_name: str) -> str:
        return spec.name

    @staticmethod
    def describe(key: str) -> str:
        return f"Memory store {key}"

    @staticmethod
    def apply_setup_change(
        key: str, previous: MemoryTarget | None, current: MemoryTarget | None
    ) -> None:
        CALLS.append(("setup", (key, previous, current)))
        if FAIL_SETUP[0]:
            raise RuntimeError("the store refused")
        if current is None:
            STORE.pop(key, None)
        else:
            STORE.setdefault(key, {})
        if FAIL_AFTER_SETUP[0]:
            raise RuntimeError("lost after applying")

    @staticmethod
    def prepare(spec: MemoryTarget) -> str:
        CALLS.append(("prepare", spec.name))
        return spec.name

    @staticmethod
    def mutate(*all_mutations: tuple[str, dict[str, Entry | None]]) -> None:
        for key, mutations in all_mutations:
            CALLS.append(("mutate", dict(mutations)))
            if FAIL_MUTATE[0] > 0:
                FAIL_MUTATE[0] -= 1
                raise ConnectionError("store unreachable")
            for row_key, entry in mutations.items():
                assert entry is None or isinstance(entry, Entry)
                if entry is None:
                    STORE[key].pop(row_key, None)
                else:
                    STORE[key][row_key] = entry


@cocoindex.op.function()
def text_size(text: str) -> int:
    return len(text)


@pytest.fixture(autouse=True)
def _reset() -> None:
    STORE.clear()
    CALLS.clear()
    FAIL_MUTATE[0] = 0
    FAIL_SETUP[0] = False
    FAIL_AFTER_SETUP[0] = False


def memory_flow(
    docs: Path, target: MemoryTarget, *, with_table: bool = False
) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=str(docs)))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["size"] = doc["content"].transform(text_size)
            out.collect(filename=doc["filename"], text=doc["content"], size=doc["size"])
        out.export("entries", target, primary_key_fields=["filename"])
        if with_table:
            out.export("copy", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def mutations() -> list[dict[str, Any]]:
    return [args for kind, args in CALLS if kind == "mutate"]


def test_rows_edits_and_deletes_reach_the_target(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    write(tmp_path / "docs" / "b.md", "beta")
    flow = cocoindex.open_flow("MemFlow", memory_flow(tmp_path / "docs", MemoryTarget("m1")))
    flow.setup()
    assert CALLS[0] == ("setup", ("m1", None, MemoryTarget("m1")))
    flow.update()
    assert STORE["m1"] == {"a.md": Entry("alpha", 5), "b.md": Entry("beta", 4)}

    write(tmp_path / "docs" / "a.md", "alpha two")
    (tmp_path / "docs" / "b.md").unlink()
    CALLS.clear()
    flow.update()
    assert STORE["m1"] == {"a.md": Entry("alpha two", 9)}
    changed: dict[str, Any] = {}
    for m in mutations():
        changed.update(m)
    assert changed == {"b.md": None, "a.md": Entry("alpha two", 9)}

    CALLS.clear()
    flow.update()
    assert mutations() == []  # nothing changed: mutate is not called

    flow.drop()
    assert "m1" not in STORE
    assert CALLS[-1] == ("setup", ("m1", MemoryTarget("m1"), None))
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 0


def test_a_failing_mutate_is_retried_with_backoff(tmp_path: Path, cocod_db: str) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    flow = cocoindex.open_flow("MemRetry", memory_flow(tmp_path / "docs", MemoryTarget("m2")))
    flow.setup()
    FAIL_MUTATE[0] = 2
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 1
    assert len(mutations()) == 3
    assert STORE["m2"] == {"a.md": Entry("alpha", 5)}


def test_a_row_whose_mutate_keeps_failing_is_not_lost(tmp_path: Path, cocod_db: str) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    flow = cocoindex.open_flow("MemLost", memory_flow(tmp_path / "docs", MemoryTarget("m3")))
    flow.setup()
    FAIL_MUTATE[0] = 1000
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    assert STORE["m3"] == {}
    FAIL_MUTATE[0] = 0
    info = flow.update()  # not recorded as done, so the next pass writes it
    assert info.stats["documents"]["num_insertions"] == 1
    assert STORE["m3"] == {"a.md": Entry("alpha", 5)}


def test_a_failed_commit_after_mutate_repeats_the_mutation(tmp_path: Path, sql: SqlHelper) -> None:
    """mutate runs inside the row transaction; when the commit fails after it, tracking
    stays old, and the next pass calls mutate again (at-least-once, never lost)."""
    write(tmp_path / "docs" / "a.md", "a long enough text")
    flow = cocoindex.open_flow(
        "MemCommit", memory_flow(tmp_path / "docs", MemoryTarget("m4"), with_table=True)
    )
    flow.setup()
    # Checked at COMMIT, after every write of the transaction (mutate included) succeeded.
    sql.execute("CREATE TABLE allowed (text text PRIMARY KEY)")
    sql.execute(
        "ALTER TABLE memcommit__copy ADD CONSTRAINT known FOREIGN KEY (text) "
        "REFERENCES allowed (text) DEFERRABLE INITIALLY DEFERRED"
    )
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    assert len(mutations()) >= 1  # mutate ran; the commit that would record it failed
    assert STORE["m4"] == {"a.md": Entry("a long enough text", 18)}
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 0
    sql.execute("ALTER TABLE memcommit__copy DROP CONSTRAINT known")
    CALLS.clear()
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 1
    assert mutations() == [{"a.md": Entry("a long enough text", 18)}]
    assert sql.fetchval("SELECT count(*) FROM memcommit__copy") == 1


def test_setup_changes_go_through_the_setup_plan(
    tmp_path: Path, cocod_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    docs = tmp_path / "docs"
    flow = cocoindex.open_flow("MemSetup", memory_flow(docs, MemoryTarget("s1")))
    flow.setup(report_to_stdout=True)
    assert "[ TO CREATE ] Memory store s1" in capsys.readouterr().out
    flow.update()
    flow.close()

    # A changed spec under the same key: apply_setup_change(previous, current), rows stay.
    CALLS.clear()
    flow = cocoindex.open_flow("MemSetup", memory_flow(docs, MemoryTarget("s1", version=2)))
    flow.setup(report_to_stdout=True)
    assert "[ TO UPDATE ] Memory store s1" in capsys.readouterr().out
    assert CALLS[0] == ("setup", ("s1", MemoryTarget("s1"), MemoryTarget("s1", version=2)))
    assert len(CALLS) == 1
    flow.setup(report_to_stdout=True)
    assert "No setup changes to apply" in capsys.readouterr().out
    flow.close()

    # A new key: the old target is torn down, the new one set up, the rows written there.
    CALLS.clear()
    flow = cocoindex.open_flow("MemSetup", memory_flow(docs, MemoryTarget("s2")))
    flow.setup()
    assert sorted(c[1][0] for c in CALLS if c[0] == "setup") == ["s1", "s2"]
    assert "s1" not in STORE
    flow.update()
    assert STORE["s2"] == {"a.md": Entry("alpha", 5)}


def test_a_failing_setup_change_rolls_setup_back(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "alpha")
    flow = cocoindex.open_flow(
        "MemFail", memory_flow(tmp_path / "docs", MemoryTarget("f1"), with_table=True)
    )
    FAIL_SETUP[0] = True
    with pytest.raises(SetupError, match="apply_setup_change failed for Memory store f1"):
        flow.setup()
    assert sql.fetchval("SELECT to_regclass('memfail__copy')") is None  # rolled back too
    FAIL_SETUP[0] = False
    flow.setup()  # the change is applied again: never recorded as done without it
    assert CALLS[-1] == ("setup", ("f1", None, MemoryTarget("f1")))
    assert sql.fetchval("SELECT to_regclass('memfail__copy')") is not None


def test_connector_definitions_are_checked_when_decorated() -> None:
    class Spec(cocoindex.op.TargetSpec):
        x: int

    with pytest.raises(FlowDefinitionError, match="needs a mutate"):

        @cocoindex.op.target_connector(spec_cls=Spec)
        class NoMutate:
            @staticmethod
            def get_persistent_key(spec: Spec, target_name: str) -> str:
                return "k"

            @staticmethod
            def apply_setup_change(key: str, previous: Any, current: Any) -> None: ...

    with pytest.raises(FlowDefinitionError, match="exactly one \\*args"):

        @cocoindex.op.target_connector(spec_cls=Spec)
        class BadMutate:
            @staticmethod
            def get_persistent_key(spec: Spec, target_name: str) -> str:
                return "k"

            @staticmethod
            def apply_setup_change(key: str, previous: Any, current: Any) -> None: ...

            @staticmethod
            def mutate(spec: Spec, mutations: dict[str, Any]) -> None: ...

    class Unregistered(cocoindex.op.TargetSpec):
        x: int

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["d"] = fb.add_source(cocoindex.sources.LocalFile(path="."))
        out = scope.add_collector()
        with scope["d"].row() as doc:
            out.collect(filename=doc["filename"])
        out.export("x", Unregistered(1), primary_key_fields=["filename"])

    with pytest.raises(FlowDefinitionError, match="no target connector is registered"):
        cocoindex.open_flow("Unregistered", define).setup()


def test_a_state_an_interrupted_setup_applied_is_a_previous_state(
    tmp_path: Path, cocod_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """v0 passes every state the target may be in: one a failed setup applied too."""
    docs = tmp_path / "docs"
    write(docs / "a.md", "alpha")
    flow = cocoindex.open_flow("MemStaged", memory_flow(docs, MemoryTarget("st")))
    flow.setup()
    flow.close()
    v2 = MemoryTarget("st", version=2)
    flow = cocoindex.open_flow("MemStaged", memory_flow(docs, v2))
    FAIL_AFTER_SETUP[0] = True
    with pytest.raises(SetupError):
        flow.setup()  # applied version 2, then failed: the record still says version 1
    FAIL_AFTER_SETUP[0] = False
    flow.close()

    CALLS.clear()
    flow = cocoindex.open_flow("MemStaged", memory_flow(docs, MemoryTarget("st")))
    flow.setup(report_to_stdout=True)  # the spec is back to what the record holds
    assert "[ TO UPDATE ] Memory store st" in capsys.readouterr().out
    assert [("setup", ("st", v2, MemoryTarget("st")))] == CALLS
    flow.setup(report_to_stdout=True)
    assert "No setup changes to apply" in capsys.readouterr().out


def test_verify_and_row_counts_name_a_custom_target_instead_of_failing(tmp_path: Path) -> None:
    """cocod cannot read a connector's storage back: verify says so, counts give None."""
    from cocod.runtime.verify import verify

    write(tmp_path / "docs" / "a.md", "alpha")
    flow = cocoindex.open_flow("MemVerify", memory_flow(tmp_path / "docs", MemoryTarget("v1")))
    flow.setup()
    flow.update()
    report = verify(flow)
    assert any("custom target, not verified" in note for note in report.notes), report.notes
    counts = bridge.run(flow.row_counts_async())
    assert counts and set(counts.values()) == {None}, counts
    flow.drop()
