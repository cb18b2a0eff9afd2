"""v0's module paths resolve under ``cocod.``: ``from cocoindex.X import Y`` with the import
line changed to ``cocod`` works for every public name of those v0 modules.

Each case runs the import statement itself (as user code would), so a name that exists only
as an attribute of ``cocod`` (not at the module path) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.auth_registry import (
    AuthEntryReference,
    add_auth_entry,
    add_transient_auth_entry,
    get_auth_entry,
    ref_auth_entry,
)
from cocod.errors import SettingsError
from tests.conftest import SqlHelper, write

V0_NAMES: dict[str, list[str]] = {
    "flow": [
        "DataCollector",
        "DataScope",
        "DataSlice",
        "EvaluateAndDumpOptions",
        "Flow",
        "FlowBuilder",
        "FlowLiveUpdater",
        "FlowLiveUpdaterOptions",
        "FlowUpdaterStatusUpdates",
        "GeneratedField",
        "TransformFlow",
        "add_flow_def",
        "drop_all_flows",
        "ensure_all_flows_built",
        "ensure_all_flows_built_async",
        "flow_by_name",
        "flow_def",
        "flow_names",
        "flows",
        "get_flow_full_name",
        "open_flow",
        "remove_flow",
        "setup_all_flows",
        "transform_flow",
        "update_all_flows",
        "update_all_flows_async",
    ],
    "setting": ["DatabaseConnectionSpec", "GlobalExecutionOptions", "ServerSettings", "Settings"],
    "index": [
        "FtsIndexDef",
        "HnswVectorIndexMethod",
        "IndexOptions",
        "IvfFlatVectorIndexMethod",
        "VectorIndexDef",
        "VectorIndexMethod",
        "VectorSimilarityMetric",
    ],
    "lib": ["init", "prepare_settings", "settings", "start_server", "stop"],
    "query_handler": ["QueryHandlerInfo", "QueryHandlerResultFields", "QueryInfo", "QueryOutput"],
    "auth_registry": [
        "AuthEntryReference",
        "TransientAuthEntryReference",
        "add_auth_entry",
        "add_transient_auth_entry",
        "get_auth_entry",
        "ref_auth_entry",
    ],
    "typing": [
        "KEY_FIELD_NAME",
        "TABLE_TYPES",
        "Annotation",
        "Float32",
        "Float64",
        "Int64",
        "Json",
        "LocalDateTime",
        "OffsetDateTime",
        "Range",
        "TypeAttr",
        "TypeKind",
        "Vector",
        "VectorInfo",
    ],
    "utils": ["get_target_default_name", "get_target_storage_default_name"],
    "llm": ["LlmApiType", "LlmSpec", "OpenAiConfig", "VertexAiConfig", "AzureOpenAiConfig"],
    "functions": [
        "DetectProgrammingLanguage",
        "EmbedText",
        "ExtractByLlm",
        "ParseJson",
        "SentenceTransformerEmbed",
        "SplitBySeparators",
        "SplitRecursively",
        "CustomLanguageSpec",
    ],
}

CASES = [(module, name) for module, names in V0_NAMES.items() for name in names]


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_from_v0_module_import_name_resolves(module: str, name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from cocod.{module} import {name}", namespace)  # the user's line, import changed
    assert namespace[name] is not None


def test_setting_app_namespace_helpers() -> None:
    from cocod.setting import get_app_namespace, split_app_namespace

    assert callable(get_app_namespace)
    assert split_app_namespace("Team.Docs", ".") == ("Team", "Docs")
    assert split_app_namespace("Docs", ".") == ("", "Docs")


def test_the_same_objects_as_the_top_level_names() -> None:
    import cocod
    import cocod.flow
    import cocod.index
    import cocod.query_handler
    import cocod.typing

    assert cocod.flow.flow_def is cocod.flow_def
    assert cocod.flow.FlowBuilder is cocod.FlowBuilder
    assert cocod.flow.FlowLiveUpdaterOptions is cocod.FlowLiveUpdaterOptions
    from cocod.runtime.evaluate import EvaluateAndDumpOptions

    assert cocod.flow.EvaluateAndDumpOptions is EvaluateAndDumpOptions
    assert cocod.index.VectorIndexDef is cocod.VectorIndexDef
    assert cocod.query_handler.QueryOutput is cocod.QueryOutput
    assert cocod.typing.Json is cocod.Json


def test_importing_cocod_flow_does_not_import_the_runtime() -> None:
    """The engine imports cocod.flow; the lazy re-exports must not pull the runtime in."""
    code = (
        "import sys, cocod.flow, cocod.flow.types; "
        "print(any(m.startswith('cocod.runtime') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_utils_default_name_alias() -> None:
    from cocod.utils import get_target_default_name, get_target_storage_default_name

    assert get_target_storage_default_name is get_target_default_name


# --- auth entries ---------------------------------------------------------------------------


class Sign(cocoindex.op.FunctionSpec):
    token: AuthEntryReference[str]


@cocoindex.op.executor_class()
class SignExecutor:
    spec: Sign

    def __call__(self, text: str) -> str:
        return f"{get_auth_entry(str, self.spec.token)}:{text}"


def test_an_auth_entry_referenced_by_a_spec_resolves_at_run_time(
    tmp_path: Path, sql: SqlHelper
) -> None:
    write(tmp_path / "docs" / "a.txt", "hello")
    source = str(tmp_path / "docs")
    key = f"signing-{tmp_path.name}"

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["signed"] = f["content"].transform(Sign(token=ref_auth_entry(key)))
            out.collect(filename=f["filename"], signed=f["signed"])
        out.export("signed", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    flow = cocoindex.open_flow("Authed", define)
    flow.setup()  # defined and set up before the entry exists: resolved only when rows run
    add_auth_entry(key, "s3cret")
    flow.update()
    assert sql.fetchval("SELECT signed FROM authed__signed") == "s3cret:hello"
    setup_json = str(sql.fetch("SELECT state::text FROM cocod.setup_metadata"))
    assert "s3cret" not in setup_json


def test_auth_entry_keys() -> None:
    first = add_transient_auth_entry("token-value")
    assert add_transient_auth_entry("token-value") == first
    assert first.key.startswith("__transient_") and "token-value" not in first.key
    assert get_auth_entry(str, first) == "token-value"
    add_auth_entry("stable-key-for-test", "a")
    add_auth_entry("stable-key-for-test", "a")  # the same value again: allowed
    with pytest.raises(SettingsError, match="already exists"):
        add_auth_entry("stable-key-for-test", "b")
    with pytest.raises(SettingsError, match="not registered"):
        get_auth_entry(str, ref_auth_entry("never-added"))


# --- the v0 names added last: full names, update/build all, prepare_settings ----------------


def test_get_flow_full_name_spells_names_as_flows_do(database_url: str) -> None:
    from cocod.flow import get_flow_full_name

    spec = cocoindex.DatabaseConnectionSpec(url=database_url)
    try:
        cocoindex.init(cocoindex.Settings(database=spec, app_namespace="Team"))
        assert get_flow_full_name("Docs") == "Team.Docs"
        flow = cocoindex.open_flow("Docs", lambda fb, scope: None)
        assert flow.full_name == get_flow_full_name("Docs")
        flow.close()
        cocoindex.stop()
        cocoindex.init(cocoindex.Settings(database=spec))
        assert get_flow_full_name("Docs") == "Docs"
    finally:
        cocoindex.stop()


def test_update_all_flows_and_ensure_all_flows_built_async(tmp_path: Path, sql: SqlHelper) -> None:
    import asyncio

    from cocod.flow import (
        FlowLiveUpdaterOptions,
        ensure_all_flows_built_async,
        setup_all_flows,
        update_all_flows,
    )
    from tests.flows import paragraph_flow

    built: list[str] = []

    def recorded(name: str):  # type: ignore[no-untyped-def]
        write(tmp_path / name / "a.md", f"{name} one\n\n{name} two")
        define = paragraph_flow(str(tmp_path / name), table_name=f"{name}_rows")

        def run(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
            built.append(name)
            define(fb, scope)

        return run

    cocoindex.open_flow("First", recorded("first"))
    cocoindex.open_flow("Second", recorded("second"))
    asyncio.run(ensure_all_flows_built_async())
    assert sorted(built) == ["first", "second"]
    setup_all_flows()
    results = update_all_flows(FlowLiveUpdaterOptions(live_mode=False))
    assert sorted(results) == ["First", "Second"]
    assert sql.fetchval("SELECT count(*) FROM first_rows") == 2
    assert sql.fetchval("SELECT count(*) FROM second_rows") == 2
    assert sorted(built) == ["first", "second"], "built once, not again by the update"


def test_prepare_settings_checks_like_init() -> None:
    from cocod.errors import NamingError
    from cocod.lib import prepare_settings

    prepared = prepare_settings(cocoindex.Settings(app_namespace="Team"))
    assert prepared["app_namespace"] == "Team" and prepared["database"] is None
    with pytest.raises(NamingError, match="app namespace"):
        prepare_settings(cocoindex.Settings(app_namespace="not valid!"))
