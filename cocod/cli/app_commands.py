"""Library commands in v0's shape: setup, update, drop, ls, show on an APP_TARGET.

setup, drop and update write a flow only under its lease (one writer per flow instance,
see cocod.storage.leases). When another process holds it (a daemon that owns the flow
holds it for as long as it owns it), they say on stderr whom they wait for, once, and
wait: for as long as it takes, or ``COCOD_LEASE_WAIT_SECONDS``; with ``--no-wait`` they
fail at once, naming the holder.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from cocod.engine.indexer import UpdateMode
from cocod.errors import AppLoadError, SettingsError
from cocod.flow.graph import CollectOp, ForEachOp, Scope, TransformOp
from cocod.runtime import context
from cocod.runtime.app_loader import load_app, split_flow_specifier
from cocod.runtime.bridge import bridge
from cocod.runtime.coordination import set_process_holder
from cocod.runtime.flow import Flow, flows
from cocod.storage import flow_records as internal
from cocod.storage.leases import LeaseHolder


def _select_flows(spec: str) -> list[Flow]:
    target, flow_name = split_flow_specifier(spec)
    load_app(target)
    registered = flows()
    if not registered:
        raise AppLoadError(f"app {target!r} defines no flows")
    if flow_name is None:
        return list(registered.values())
    if flow_name not in registered:
        raise AppLoadError(
            f"flow {flow_name!r} is not defined in {target!r} (defined: {', '.join(registered)})"
        )
    return [registered[flow_name]]


LEASE_WAIT_KNOB = "COCOD_LEASE_WAIT_SECONDS"


def _lease_wait(args: argparse.Namespace) -> float | None:
    """How long to wait for a flow another process writes: 0 with ``--no-wait``, else
    ``COCOD_LEASE_WAIT_SECONDS``, else as long as it takes (None). This process is the
    "cli" holder in the lease rows it writes."""
    set_process_holder(LeaseHolder.this_process("cli"))
    if getattr(args, "no_wait", False):
        return 0.0
    raw = os.environ.get(LEASE_WAIT_KNOB, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise SettingsError(f"{LEASE_WAIT_KNOB}={raw!r} is not a number of seconds") from None
    if not seconds >= 0:
        raise SettingsError(f"{LEASE_WAIT_KNOB} must be 0 or more (it is {raw})")
    return seconds


def _say_waiting(flow_name: str) -> Callable[[LeaseHolder], None]:
    def say(holder: LeaseHolder) -> None:
        print(
            f"cocod: waiting for flow {flow_name!r}: held by {holder.describe()}",
            file=sys.stderr,
            flush=True,
        )

    return say


def _confirm(question: str, force: bool) -> bool:
    if force:
        return True
    if not sys.stdin.isatty():
        print(f"{question} Not a terminal: pass -f/--force to apply.", file=sys.stderr)
        return False
    return input(f"{question} [yes/N] ").strip().lower() in ("y", "yes")


def _say_database(ctx: context.LibraryContext, *, quiet: bool) -> None:
    """One line on stderr when no database URL is configured anywhere, so rows never land
    in the embedded server without the user knowing (v0 would have failed instead)."""
    if ctx.is_embedded and not quiet:
        print(
            "cocod: no database URL (COCOINDEX_DATABASE_URL in the environment or .env, or "
            "a @cocod.settings function): using the embedded PostgreSQL server in "
            f"{ctx.embedded_data_dir}",
            file=sys.stderr,
        )


def _setup_flows(
    selected: list[Flow],
    force: bool,
    *,
    quiet: bool = False,
    always_show: bool = True,
    lease_wait: float | None = None,
    build_deferred: bool = True,
) -> bool:
    """Set up the flows whose plan needs applying; True unless the user declined.

    A flow with no changes may still need applying: the vector indexes an interrupted
    initial load deferred (its marker) are built by setup. Building them changes nothing
    the user has to approve, so only real changes ask for confirmation.
    ``build_deferred=False`` (``cocod update``'s setup step) leaves them to the pass that
    follows, which builds them at its end, after the rest of the load.
    """
    ctx = context.get_context()
    pending = []
    plans = []
    for fl in selected:
        plan = bridge.run(fl.execution().plan_setup(ctx))
        plans.append(plan)
        if plan.needs_apply if build_deferred else plan.has_changes:
            pending.append(fl)
    if not quiet:
        for plan in plans:
            if always_show or (plan.needs_apply if build_deferred else plan.has_changes):
                print(plan.render(ctx.schema) + "\n")
    if not pending:
        if not quiet:
            print("Setup is already up to date.")
        return True
    if any(p.has_changes for p in plans) and not _confirm(
        "Changes need to be pushed. Continue?", force
    ):
        return False
    for fl in pending:
        bridge.run(
            fl.execution().setup(
                ctx,
                out=None if quiet else sys.stdout,
                show_plan=False,
                lease_wait=lease_wait,
                on_lease_wait=_say_waiting(fl.name),
                build_deferred=build_deferred,
            )
        )
    return True


def _drop_flows(selected: list[Flow], force: bool, lease_wait: float | None = None) -> bool:
    ctx = context.get_context()
    pending = []
    for fl in selected:
        plan = bridge.run(fl.execution().plan_drop(ctx))
        if plan.has_changes:
            print(plan.render(ctx.schema) + "\n")
            pending.append(fl)
    if not pending:
        print("No flows need to be dropped.")
        return True
    if not _confirm("The flows above will be dropped with their data. Continue?", force):
        return False
    for fl in pending:
        bridge.run(
            fl.execution().drop(
                ctx,
                out=sys.stdout,
                show_plan=False,
                lease_wait=lease_wait,
                on_lease_wait=_say_waiting(fl.name),
            )
        )
    return True


def cmd_setup(args: argparse.Namespace) -> int:
    selected = _select_flows(args.target)
    wait = _lease_wait(args)
    _say_database(context.get_context(), quiet=False)
    if args.reset and not _drop_flows(selected, args.force, wait):
        return 1
    return 0 if _setup_flows(selected, args.force, lease_wait=wait) else 1


def cmd_drop(args: argparse.Namespace) -> int:
    selected = _select_flows(args.target)
    if args.flow_names:
        names = set(args.flow_names)
        for unknown in sorted(names - {f.name for f in selected}):
            print(f"warning: flow {unknown!r} is not defined; ignored", file=sys.stderr)
        selected = [f for f in selected if f.name in names]
    return 0 if _drop_flows(selected, args.force, _lease_wait(args)) else 1


def cmd_update(args: argparse.Namespace) -> int:
    selected = _select_flows(args.target)
    wait = _lease_wait(args)
    _say_database(context.get_context(), quiet=args.quiet)
    if args.reset and not _drop_flows(selected, args.force, wait):
        return 1
    if not _setup_flows(
        selected,
        args.force,
        quiet=args.quiet,
        always_show=False,
        lease_wait=wait,
        build_deferred=False,  # the pass builds them at its end
    ):
        return 1
    mode = (
        UpdateMode.FULL_REPROCESS
        if args.full_reprocess
        else UpdateMode.REEXPORT
        if args.reexport
        else UpdateMode.NORMAL
    )
    if args.live:
        return _run_live(selected, mode, quiet=args.quiet)
    ctx = context.get_context()
    for fl in selected:
        bridge.run(
            fl.execution().update(
                ctx,
                mode,
                print_stats=not args.quiet,
                lease_wait=wait,
                on_lease_wait=_say_waiting(fl.name),
            )
        )
    return 0


def _run_live(selected: list[Flow], mode: UpdateMode, *, quiet: bool) -> int:
    """``update -L``: catch up, then follow file changes until Ctrl+C."""
    from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions

    options = FlowLiveUpdaterOptions(
        live_mode=True,
        reexport_targets=mode == UpdateMode.REEXPORT,
        full_reprocess=mode == UpdateMode.FULL_REPROCESS,
        print_stats=not quiet,
    )
    updaters = [FlowLiveUpdater(fl, options) for fl in selected]
    if not quiet:
        print("Live updating; code changes to the flows need a restart. Ctrl+C to stop.")
    for updater in updaters:
        updater.start()
    try:
        for updater in updaters:
            updater.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for updater in updaters:
            updater.abort()
        for updater in updaters:
            updater.wait()
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """v0's ``ls``: an app's flows with ``[+]`` for those whose setup is not current; with
    no app, the flows of the current app namespace that have a persisted setup."""
    if args.target:
        selected = _select_flows(args.target)  # first: the app may register @settings
        ctx = context.get_context()
        any_stale = False
        for fl in sorted(selected, key=lambda f: f.name):
            plan = bridge.run(fl.execution().plan_setup(ctx))
            stale = plan.has_changes
            any_stale = any_stale or stale
            print(f"{fl.name}{' [+]' if stale else ''}")
        if any_stale:
            print("\nNotes:\n  [+]: Flows present in the current process, but missing setup.")
        return 0
    ctx = context.get_context()

    async def persisted() -> list[str]:
        pool = await ctx.pool()
        async with pool.acquire() as conn:
            return await internal.list_flow_names(conn, ctx.schema)

    names = _in_namespace(bridge.run(persisted()), ctx.settings.app_namespace)
    if getattr(args, "json", False):
        import json

        print(json.dumps([{"name": n, "persisted": True} for n in names]))
        return 0
    if not names:
        print("No persisted flow setups found in the backend.")
    for name in names:
        print(name)
    return 0


def _in_namespace(full_names: list[str], namespace: str) -> list[str]:
    """Flow names of ``namespace`` (without its prefix), sorted, as v0 lists them: with no
    namespace, the flows that have none."""
    if not namespace:
        return sorted(n for n in full_names if "." not in n)
    prefix = namespace + "."
    return sorted(n.removeprefix(prefix) for n in full_names if n.startswith(prefix))


def cmd_query(args: argparse.Namespace) -> int:
    import json

    selected = _select_flows(args.target)
    if len(selected) != 1:
        names = ", ".join(f.name for f in selected)
        raise AppLoadError(f"the app defines several flows ({names}); name one as APP:FLOW")
    output = selected[0].query(args.text, top_k=args.top, export_name=args.export)
    if args.json:
        print(json.dumps(output.results, ensure_ascii=False, default=str))
        return 0
    for rank, row in enumerate(output.results, 1):
        where = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("score", "text") and v is not None
        )
        text = str(row.get("text", "")).strip().replace("\n", " ")
        print(f"{rank}. score={row['score']:.4f}  {where}")
        if text:
            print(f"   {text[:160]}{'…' if len(text) > 160 else ''}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    for fl in _select_flows(args.target):
        execution = fl.execution()
        graph = execution.graph
        print(f"Flow: {graph.full_name}")
        for name, source in graph.sources.items():
            print(f"├── Source {name}: {source.spec.kind()} {source.row_type.describe()}")
        for op in graph.root.ops:
            if isinstance(op, ForEachOp):
                _print_scope(op.child, "│   ", f"for each row of {op.table.describe()}")
        for export in graph.exports:
            fields = ", ".join(export.collector.fields)
            print(
                f"└── Export {export.name}: {export.target.kind()} "
                f"(keys: {', '.join(export.primary_key_fields)}; fields: {fields})"
            )
        if args.verbose:
            print("\nFields:")
            for export in graph.exports:
                for fname, ftype in export.collector.fields.items():
                    print(f"  {export.name}.{fname}: {ftype.describe()}")
    return 0


def _print_scope(scope: Scope, indent: str, title: str) -> None:
    print(f"{indent}{title}")
    for op in scope.ops:
        if isinstance(op, TransformOp):
            output_type = op.function.output_type.describe()
            print(f"{indent}  {op.output} = {op.function.kind} -> {output_type}")
        elif isinstance(op, ForEachOp):
            _print_scope(op.child, indent + "  ", f"for each row of {op.table.describe()}")
        elif isinstance(op, CollectOp):
            print(
                f"{indent}  collect into {op.collector.name}: {', '.join(n for n, _ in op.values)}"
            )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """v0's ``evaluate``: one flow, its rows as YAML files, no target or tracking written."""
    import datetime

    from cocod.runtime.evaluate import EvaluateAndDumpOptions

    selected = _select_flows(args.target)
    if len(selected) != 1:
        names = ", ".join(f.name for f in selected)
        raise AppLoadError(f"the app defines several flows ({names}); name one as APP:FLOW")
    fl = selected[0]
    output_dir = args.output_dir
    if output_dir is None:
        namespace = context.get_app_namespace(trailing_delimiter="_")
        stamp = datetime.datetime.now().strftime("%y%m%d_%H%M%S")
        output_dir = f"eval_{namespace}{fl.name}_{stamp}"
    fl.evaluate_and_dump(EvaluateAndDumpOptions(output_dir=output_dir, use_cache=args.cache))
    return 0
