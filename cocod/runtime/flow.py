"""``Flow`` and the process-wide registry of open flows (v0's ``flow.py`` surface).

A Flow has two independent lives: the in-process object (``open_flow`` … ``close``) and
its persistent resources (``setup`` … ``drop``). Closing never touches the database;
dropping never invalidates the object.

The async methods (``setup_async``, ``drop_async``, ``update_async``, ``query_async``,
``row_counts_async``), ``stats()`` and ``live_updater()`` are the runtime API the daemon
uses: everything it needs from a flow, with nothing private.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import anyio
import anyio.to_thread
import structlog

from cocod.engine.indexer import UpdateMode
from cocod.engine.progress import PassProgress, reporting_to
from cocod.engine.stats import IndexUpdateInfo
from cocod.errors import FlowClosedError
from cocod.flow.builder import DataScope, FlowBuilder
from cocod.flow.naming import validate_flow_name, validate_full_flow_name
from cocod.runtime.bridge import bridge
from cocod.runtime.context import LibraryContext, get_context
from cocod.runtime.execution import FlowExecution, thread_limiter

if TYPE_CHECKING:
    from cocod.runtime.evaluate import EvaluateAndDumpOptions
    from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions

FlowDef = Callable[[FlowBuilder, DataScope], None]
ProgressCallback = Callable[[PassProgress], object]
"""``Flow.update(progress=...)``: called with a source pass's progress, on the event loop."""
F = TypeVar("F")
log = structlog.get_logger(__name__)


class CallbackSink:
    """A :class:`~cocod.engine.progress.ProgressSink` that calls a user's function.

    A failing callback (a progress bar's bug) must not fail the indexing it watches: its
    first error is logged with a traceback, later ones are ignored.
    """

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self._has_failed = False

    def on_progress(self, progress: PassProgress) -> None:
        try:
            self._callback(progress)
        except Exception:
            if not self._has_failed:
                self._has_failed = True
                log.warning("flow.progress_callback_failed", exc_info=True)


_registry_lock = threading.Lock()
_registry: dict[str, Flow] = {}


class Flow:
    """An open flow instance: a definition plus a name."""

    def __init__(self, name: str, fl_def: FlowDef) -> None:
        self._name = validate_flow_name(name)
        self._fl_def = fl_def
        self._execution: FlowExecution | None = None
        self._execution_ctx: LibraryContext | None = None
        self._is_closed = False
        self._build_lock = threading.Lock()
        self.query_handlers: dict[str, tuple[Callable[..., Any], Any]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def full_name(self) -> str:
        namespace = get_context().settings.app_namespace
        full = f"{namespace}.{self._name}" if namespace else self._name
        return validate_full_flow_name(full)

    def __repr__(self) -> str:
        state = "closed" if self._is_closed else "open"
        return f"<cocod.Flow {self._name!r} ({state})>"

    def _check_open(self) -> None:
        if self._is_closed:
            raise FlowClosedError(f"flow {self._name!r} is closed; open it again to use it")

    def _execution_for(self, ctx: LibraryContext) -> FlowExecution:
        """Run the definition once per library context (lazily, like v0)."""
        self._check_open()
        with self._build_lock:
            if self._execution is None or self._execution_ctx is not ctx:
                self._execution = FlowExecution(self._name, self.full_name, self._fl_def)
                self._execution_ctx = ctx
            return self._execution

    def execution(self) -> FlowExecution:
        return self._execution_for(get_context())

    async def execution_async(self) -> FlowExecution:
        """The built flow; the definition (user code) runs in a worker thread, once."""
        ctx = get_context()
        built = self._execution
        if built is not None and self._execution_ctx is ctx and not self._is_closed:
            return built
        thread_limiter()  # created here: anyio primitives belong to the event loop
        return await anyio.to_thread.run_sync(self._execution_for, ctx)

    # -- setup / drop ---------------------------------------------------------------------
    async def _setup(self, out: TextIO | None) -> None:
        ctx = get_context()
        await (await self.execution_async()).setup(ctx, out=out)

    def setup(self, report_to_stdout: bool = False) -> None:
        bridge.run(self._setup(sys.stdout if report_to_stdout else None))

    async def setup_async(
        self, report_to_stdout: bool = False, *, out: TextIO | None = None
    ) -> None:
        """Create or update the flow's tables and state; the plan and actions go to
        ``out`` (or stdout when ``report_to_stdout``)."""
        await bridge.run_async(self._setup(out or (sys.stdout if report_to_stdout else None)))

    async def _drop(self, out: TextIO | None) -> None:
        ctx = get_context()
        await (await self.execution_async()).drop(ctx, out=out)

    def drop(self, report_to_stdout: bool = False) -> None:
        bridge.run(self._drop(sys.stdout if report_to_stdout else None))

    async def drop_async(
        self, report_to_stdout: bool = False, *, out: TextIO | None = None
    ) -> None:
        """Drop the flow's tables and state (what setup created); report as setup_async."""
        await bridge.run_async(self._drop(out or (sys.stdout if report_to_stdout else None)))

    # -- update ---------------------------------------------------------------------------
    async def _update(
        self,
        reexport_targets: bool,
        full_reprocess: bool,
        print_stats: bool,
        mode: UpdateMode | None = None,
        progress: ProgressCallback | None = None,
    ) -> IndexUpdateInfo:
        # Runs on the bridge's loop: the sink is set here, in the coroutine that runs the
        # pass, so the context variable reaches the task groups the engine starts.
        ctx = get_context()
        if mode is None:
            mode = UpdateMode.from_flags(reexport=reexport_targets, full_reprocess=full_reprocess)
        execution = await self.execution_async()
        if progress is None:
            return await execution.update(ctx, mode, print_stats=print_stats)
        with reporting_to(CallbackSink(progress)):
            return await execution.update(ctx, mode, print_stats=print_stats)

    def update(
        self,
        *,
        reexport_targets: bool = False,
        full_reprocess: bool = False,
        print_stats: bool = False,
        progress: ProgressCallback | None = None,
    ) -> IndexUpdateInfo:
        """One catch-up pass over every source; returns its statistics.

        ``progress`` is called with a :class:`~cocod.engine.progress.PassProgress` (the same
        object, updated) whenever a source pass makes progress: listing done, rows
        finished. It runs on the library's event loop, so it must be quick and must not
        block (update a progress bar, store the figures).
        """
        return bridge.run(
            self._update(reexport_targets, full_reprocess, print_stats, progress=progress)
        )

    async def update_async(
        self,
        *,
        reexport_targets: bool = False,
        full_reprocess: bool = False,
        print_stats: bool = False,
        mode: UpdateMode | None = None,
        progress: ProgressCallback | None = None,
    ) -> IndexUpdateInfo:
        """One catch-up pass; ``mode`` (an UpdateMode) overrides the two v0 flags;
        ``progress`` as for :meth:`update`."""
        return await bridge.run_async(
            self._update(reexport_targets, full_reprocess, print_stats, mode, progress)
        )

    # -- evaluate -------------------------------------------------------------------------
    async def _evaluate_and_dump(self, options: EvaluateAndDumpOptions) -> None:
        from cocod.runtime.evaluate import evaluate_and_dump

        await evaluate_and_dump(await self.execution_async(), get_context(), options)

    def evaluate_and_dump(self, options: EvaluateAndDumpOptions) -> None:
        """Run the flow over every source row without writing targets, tracking or the
        memo, and write each row's collected data to a YAML file (v0's
        ``evaluate_and_dump``; see :mod:`cocod.runtime.evaluate`)."""
        bridge.run(self._evaluate_and_dump(options))

    async def evaluate_and_dump_async(self, options: EvaluateAndDumpOptions) -> None:
        await bridge.run_async(self._evaluate_and_dump(options))

    def live_updater(self, options: FlowLiveUpdaterOptions | None = None) -> FlowLiveUpdater:
        """A live updater for this flow: ``await task_group.start(updater.serve)``."""
        from cocod.runtime.live_updater import FlowLiveUpdater

        return FlowLiveUpdater(self, options)

    # -- what the flow holds ----------------------------------------------------------------
    async def _row_counts(self) -> dict[str, int | None]:
        from cocod.executors import postgres
        from cocod.ops.targets import Postgres

        ctx = get_context()
        execution = await self.execution_async()
        states = {
            name: postgres.desired_state(execution.full_name, export)
            for name, export in execution.plan.exports.items()
            if isinstance(export.export.target, Postgres)
        }
        pool = await ctx.pool()
        async with pool.acquire() as conn:
            by_table = await postgres.row_count_estimates(conn, states.values())
        # A custom target's rows live in the user's storage: not counted (None).
        return {
            name: by_table.get(postgres.table_of(states[name]).display) if name in states else None
            for name in execution.plan.exports
        }

    async def row_counts_async(self) -> dict[str, int | None]:
        """Rows per export (estimated from statistics on big tables; None: no table yet)."""
        return await bridge.run_async(self._row_counts())

    def stats(self) -> dict[str, Any]:
        """In-process figures, from memory: whether it is built, its sources and exports,
        and how many times its functions ran (memo hits do not count)."""
        built = self._execution
        if built is None:
            return {"built": False, "sources": [], "exports": [], "function_calls": 0}
        return {
            "built": True,
            "sources": list(built.sources),
            "exports": list(built.plan.exports),
            "function_calls": built.function_calls(),
        }

    # -- queries ----------------------------------------------------------------------------
    def add_query_handler(
        self, name: str, handler: Callable[..., Any], /, *, result_fields: Any = None
    ) -> None:
        """Register a query handler (v0 served these over HTTP; cocod keeps them in-process)."""
        if name in self.query_handlers:
            raise KeyError(f"query handler {name!r} already exists on flow {self._name!r}")
        self.query_handlers[name] = (handler, result_fields)

    def query_handler(self, name: str | None = None, result_fields: Any = None) -> Callable[[F], F]:
        def decorate(handler: F) -> F:
            self.add_query_handler(
                name or str(getattr(handler, "__name__", "query")),
                handler,  # type: ignore[arg-type]
                result_fields=result_fields,
            )
            return handler

        return decorate

    async def _query(self, text: str, top_k: int, export_name: str | None) -> Any:
        from cocod.runtime.query import query_export

        ctx = get_context()
        return await query_export(
            await self.execution_async(), ctx, text, top_k=top_k, export_name=export_name
        )

    def query(self, text: str, *, top_k: int = 10, export_name: str | None = None) -> Any:
        """Top-k rows of the export's vector index nearest to ``text`` (a QueryOutput)."""
        return bridge.run(self._query(text, top_k, export_name))

    async def query_async(
        self, text: str, *, top_k: int = 10, export_name: str | None = None
    ) -> Any:
        return await bridge.run_async(self._query(text, top_k, export_name))

    # -- in-process lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Forget the flow in this process; its tables and state stay in the database."""
        with _registry_lock:
            if _registry.get(self._name) is self:
                del _registry[self._name]
        self._is_closed = True
        self._execution = None


def open_flow(name: str, fl_def: FlowDef) -> Flow:
    """Register a flow instance under ``name``; the definition runs on first use."""
    validate_flow_name(name)
    with _registry_lock:
        if name in _registry:
            raise KeyError(f"Flow with name {name} already exists")
        flow = Flow(name, fl_def)
        _registry[name] = flow
    return flow


def add_flow_def(name: str, fl_def: FlowDef) -> Flow:
    """Deprecated v0 alias of :func:`open_flow`."""
    return open_flow(name, fl_def)


def remove_flow(fl: Flow) -> None:
    """Deprecated v0 alias of ``fl.close()``."""
    fl.close()


def flow_def(name: str | None = None) -> Callable[[FlowDef], Flow]:
    """Decorator: ``@flow_def(name=...)`` is ``open_flow(name or fn.__name__, fn)``."""

    def decorate(fn: FlowDef) -> Flow:
        return open_flow(name or fn.__name__, fn)

    return decorate


def flow_names() -> list[str]:
    with _registry_lock:
        return list(_registry)


def flows() -> dict[str, Flow]:
    with _registry_lock:
        return dict(_registry)


def flow_by_name(name: str) -> Flow:
    with _registry_lock:
        return _registry[name]


def ensure_all_flows_built() -> None:
    for fl in flows().values():
        fl.execution()


async def ensure_all_flows_built_async() -> None:
    """v0's ``ensure_all_flows_built_async``: run each open flow's definition (in a thread)."""
    for fl in flows().values():
        await fl.execution_async()


def get_flow_full_name(name: str) -> str:
    """v0's ``cocoindex.flow.get_flow_full_name``: ``name`` under the current app namespace
    (``"Ns.Name"``; the name alone without one), as :attr:`Flow.full_name` spells it."""
    namespace = get_context().settings.app_namespace
    return validate_full_flow_name(f"{namespace}.{name}" if namespace else name)


def setup_all_flows(report_to_stdout: bool = False) -> None:
    for fl in flows().values():
        fl.setup(report_to_stdout=report_to_stdout)


def drop_all_flows(report_to_stdout: bool = False) -> None:
    for fl in flows().values():
        fl.drop(report_to_stdout=report_to_stdout)


async def update_all_flows_async(options: Any = None) -> dict[str, IndexUpdateInfo]:
    """Update every open flow concurrently (``options``: a FlowLiveUpdaterOptions-like)."""
    import anyio

    reexport = bool(getattr(options, "reexport_targets", False))
    full = bool(getattr(options, "full_reprocess", False))
    results: dict[str, IndexUpdateInfo] = {}

    async def one(name: str, fl: Flow) -> None:
        results[name] = await fl.update_async(reexport_targets=reexport, full_reprocess=full)

    async with anyio.create_task_group() as tg:
        for name, fl in flows().items():
            tg.start_soon(one, name, fl)
    return results


def update_all_flows(options: Any = None) -> dict[str, IndexUpdateInfo]:
    """v0's ``update_all_flows``: one catch-up pass of every open flow, concurrently.

    ``options`` (a FlowLiveUpdaterOptions) contributes ``reexport_targets`` and
    ``full_reprocess``; its ``live_mode`` is not followed (v0 would then never return):
    use :class:`~cocod.runtime.live_updater.FlowLiveUpdater` per flow for live updates.
    """
    return bridge.run(update_all_flows_async(options))
