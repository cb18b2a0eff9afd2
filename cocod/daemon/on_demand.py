"""On-demand instances (``live = false``): one :class:`cocod.FlowInstances` holds their flows.

The daemon keeps no cache logic of its own: the library's ``FlowInstances`` (the
"Manage Flows Dynamically" cache, done right) decides when a flow opens and closes, so a
command and a user's program get the same guarantees. Concurrent commands on a cold
instance share one open; a flow idle for ``idle_ttl`` is closed, and opening one past
``max_open_flows`` closes the least recently used idle one; a flow a command holds
(:meth:`OnDemandFlows.use`) is never closed under it (an explicit close waits for it).
An instance replaced by a reload (or remove + add) while a command holds its flow: the
next command waits for that close, then opens the new config's flow.

The opener is the daemon's ``open_flow(instance)`` (the definition runs in a worker
thread), then ``setup()`` unless the instance's config says ``auto_setup = false``, as v0's
examples do with ``open_flow`` + ``setup()``. The close hook retires the flow's counters
into its instance and shows it STOPPED. Expiry runs on the daemon's loop
(:meth:`OnDemandFlows.serve_expiry`), not in a sweeper thread, so every state change
happens on the loop. Live instances are not part of the cache: their supervisor owns them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import structlog

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.instance_state import Instance, State
from cocod.errors import CocodError
from cocod.flow_instances import CloseReason, FlowInstances, FlowStillClosingError
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.runtime.flow import Flow

log = structlog.get_logger(__name__)

EXPIRY_MAX_SLEEP_S = 30.0
"""The expiry loop looks again at least this often (a reload may shorten ``idle_ttl``)."""
EXPIRY_MIN_SLEEP_S = 0.05
REPLACED_WAIT_S = 60.0
"""How long a command on a replaced instance waits for the command using the previous
flow to end (then ``flow_failed``: retry when that command has finished)."""
MAX_REPLACED_TRIES = 3

_CLOSE_EVENTS = {
    CloseReason.EXPIRED: "instance.idle_closed",
    CloseReason.EVICTED: "instance.evicted",
    CloseReason.CLOSED: "instance.closed",
    CloseReason.ABANDONED: "instance.closed",
}


class OnDemandFlows:
    """The open flows of on-demand instances, by instance name."""

    def __init__(
        self,
        *,
        max_open: int,
        idle_ttl: float,
        lookup: Callable[[str], Instance | None],
        open_flow: Callable[[Instance], Awaitable[Flow]],
        set_state: Callable[[Instance, State], None],
    ) -> None:
        self._lookup = lookup
        self._open_flow = open_flow
        self._set_state = set_state
        self._holders: dict[str, Instance] = {}
        """The instance each cached flow belongs to (a removed one keeps it until closed)."""
        self.cache: FlowInstances[Flow] = FlowInstances(
            self._open,
            close_timeout=REPLACED_WAIT_S,
            maxsize=max_open,
            ttl=idle_ttl,
            setup=False,  # per instance (auto_setup), in _open
            on_close=self._closed,
            sweep=False,  # serve_expiry, on the daemon's loop
        )

    @property
    def opens(self) -> int:
        """On-demand flows opened since the daemon started."""
        return self.cache.opens

    async def _open(self, name: str) -> Flow:
        instance = self._lookup(name)
        if instance is None or instance.config.live:
            raise ProtocolError(
                ErrorCode.UNKNOWN_FLOW, f"{name!r} is not an on-demand instance any more"
            )
        try:
            flow = await self._open_flow(instance)
            try:
                execution = await flow.execution_async()
                if instance.config.auto_setup:
                    # Idempotent and cheap when up to date: a never-set-up on-demand
                    # instance works on its first command, as v0's open_flow+setup does.
                    # An interrupted load's deferred indexes are left to its next pass
                    # (the first command must not pay a whole table's build).
                    await bridge.run_async(execution.setup(get_context(), build_deferred=False))
            except BaseException:
                flow.close()
                raise
        except CocodError as e:
            instance.last_error = str(e)
            raise
        instance.flow = flow
        instance.execution = execution
        self._holders[name] = instance
        log.info("instance.opened", instance=name, opens=self.cache.opens + 1)
        self._set_state(instance, State.OPEN)
        return flow

    def _closed(self, name: str, flow: Flow, reason: CloseReason) -> None:
        """FlowInstances closed ``flow``: retire its counters, show its instance STOPPED."""
        instance = self._holders.get(name)
        if instance is None or instance.flow is not flow:
            return
        del self._holders[name]
        instance.retired_calls = instance.function_calls()
        instance.execution = None
        instance.flow = None
        fields: dict[str, Any] = {"reason": str(reason)}
        if reason is CloseReason.EVICTED:
            fields["reason"] = "max_open_flows"
        log.info(_CLOSE_EVENTS[reason], instance=name, **fields)
        self._set_state(instance, State.STOPPED)

    @contextlib.asynccontextmanager
    async def use(self, instance: Instance) -> AsyncIterator[Flow]:
        """The instance's flow for one command, opened if needed, never closed meanwhile.

        When the instance replaced another of its name (a reload, or remove + add) whose
        flow a running command still holds, this waits (``REPLACED_WAIT_S``) for that
        command to end and the old flow to close, then opens the instance's own flow.
        """
        name = instance.name
        for _ in range(MAX_REPLACED_TRIES):
            if self.cache.is_closing(name):
                log.info("instance.waiting_for_previous_flow", instance=name)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    flow = await stack.enter_async_context(self.cache.use_async(name))
                except FlowStillClosingError as e:
                    raise _still_in_use(e) from e
                if self._holders.get(name) is instance:
                    yield flow
                    return
                if self._lookup(name) is not instance:
                    raise _replaced(name, "as this command started", "retry it")
                # The flow of the instance this one replaced (its open raced the reload):
                # it closes when released, and the next use waits for that.
                self.cache.close(name)
        raise _replaced(name, "again while this command waited for it", "retry it")

    async def open(self, instance: Instance) -> None:
        try:
            await self.cache.get_async(instance.name)
        except FlowStillClosingError as e:
            raise _still_in_use(e) from e

    def close(self, instance: Instance) -> None:
        """Close now, or when the commands using it end (then it shows STOPPED)."""
        self.cache.close(instance.name)
        if instance.flow is None:
            self._set_state(instance, State.STOPPED)

    async def serve_expiry(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Close flows idle past the TTL, waking at the next deadline; close all at exit."""
        task_status.started()
        try:
            while True:
                delay = self.cache.next_expiry()
                delay = self.cache.ttl if delay is None else min(delay, self.cache.ttl)
                await anyio.sleep(min(max(delay, EXPIRY_MIN_SLEEP_S), EXPIRY_MAX_SLEEP_S))
                self.cache.expire()
        finally:
            # In-process bookkeeping only (no database): flows in use close when released.
            self.cache.close_all()


def _still_in_use(error: FlowStillClosingError) -> ProtocolError:
    return _replaced(
        error.name,
        f"and a command still runs on its previous flow after {error.timeout:g} s",
        "retry when that command has finished",
    )


def _replaced(name: str, when: str, what_to_do: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.FLOW_FAILED,
        f"instance {name!r} was replaced (reload, or remove + add) {when}; {what_to_do}",
    )
