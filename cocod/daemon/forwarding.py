"""``cocod update NAME`` sent to a standby: forwarded to the owner through the database.

Why through the database: the daemons never talk to each other (PostgreSQL is the whole
coordination engine), and the database already knows who owns what. A standby that
receives a writing command inserts a row in ``cocod.cluster_requests``
(:mod:`cocod.daemon.forwarding_table`) and ``NOTIFY``\\ s; the owner's :meth:`Forwarding.serve`
picks it (``FOR UPDATE SKIP LOCKED``: served once), runs it exactly as a local command
(the same handler, under the owner's own lease), writes the reply (the result, or the
error's wire code and message) and ``NOTIFY``\\ s back. The requester waits on the
notification, with a poll (capped exponential backoff with jitter, up to
:data:`POLL_CAP_S`) for a lost one. While the command runs, the owner records its latest
progress in the row (:data:`PROGRESS_EVERY_S`) and the requester relays each new state to
its client as it polls, so a standby's caller sees the owner's pass advance.

Failover while it waits. A request is picked by the flow, not by a daemon, so a pending
request goes to whoever owns the instance next — this daemon included, once it owns it
(its own server then runs it locally). A running one whose server dies (its membership
lock gone, or its heartbeat older than ``lease_timeout``) is queued again; so is one whose
server lost the lease meanwhile (it answers ``not_owner``). Updates are idempotent, so
running one again after a half-done attempt is safe. It ends, whatever happens:

* nobody picks it within ``pick_timeout`` (``2 × lease_timeout + 30 s``: an owner that does
  not serve forwarded commands, such as an older cocod) → :class:`ForwardingTimeoutError`
  naming the owner, and the request is withdrawn so nobody runs it later;
* requeued :data:`MAX_REQUEUES` times, or running past :data:`FORWARD_DEADLINE_S` → the same.

Only ``update`` is forwarded; ``setup``, ``drop`` and ``verify`` on a standby are refused
``not_owner`` (they are rare and operator-driven: send them to the owner's socket).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.cluster import Cluster
from cocod.daemon.forwarding_table import PickedRequest, RequestsTable, RequestState
from cocod.daemon.ownership import NotOwnerError
from cocod.daemon.server import Emit, error_reply_of
from cocod.errors import CocodError, DatabaseUnavailableError, LeaseLostError
from cocod.runtime.coordination import Backoff

log = structlog.get_logger(__name__)

REQUESTS_CHANNEL = "cocod_requests"
"""``NOTIFY`` channel: ``request`` (a request was queued), ``reply:<id>`` (it finished)."""
FIRST_POLL_S = 0.05
POLL_CAP_S = 1.0
MAX_REQUEUES = 5
FORWARD_DEADLINE_S = 6 * 3600.0
"""A forwarded command still running after this long is given up (by its requester)."""
REPLY_DEADLINE_S = 10.0
"""The owner tries this long to record a reply, even while it stops; then less often
(every :data:`REPLY_RETRY_CAP_S` at most) for as long as it runs."""
REPLY_RETRY_CAP_S = 30.0
WITHDRAW_DEADLINE_S = 2.0
CLEAN_UP_EVERY_S = 60.0
SERVER_MIN_GAP_S = 0.05

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError)

PROGRESS_EVERY_S = 1.0
"""A served command's progress is recorded in its request's row at most this often; its
requester reads it as it polls (every :data:`POLL_CAP_S` at most) and relays it."""

RunCommand = Callable[[str, str, dict[str, Any], Emit], Awaitable[dict[str, Any]]]
"""(instance, command, args, emit) → the command's result, run here as a local command;
its progress events go to ``emit``."""


class ForwardingTimeoutError(NotOwnerError):
    """A forwarded command no owner answered in time (wire code ``not_owner``)."""


class Forwarding:
    """This daemon's side of forwarding: it serves requests for the instances it owns and
    forwards the commands it receives for the instances it holds as STANDBY."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        servable: Callable[[], dict[str, str]],
        flow_name_of: Callable[[str], str],
        run: RunCommand,
        is_serving: Callable[[], bool] = lambda: True,
        pick_timeout: float | None = None,
    ) -> None:
        self.cluster = cluster
        self.table = RequestsTable(cluster.schema)
        self.servable = servable
        """Flow full name → instance name, for the instances this daemon can serve now."""
        self.flow_name_of = flow_name_of
        self.run = run
        self.is_serving = is_serving
        """False while the daemon drains: nothing more is picked, failures are given back."""
        self.pick_timeout = (
            2 * cluster.lease_timeout + 30.0 if pick_timeout is None else pick_timeout
        )
        self._wake = anyio.Event()
        self._replies: dict[int, anyio.Event] = {}
        self._table_ready = False
        cluster.listener.channels[REQUESTS_CHANNEL] = self._on_notify

    def _on_notify(self, payload: str) -> None:
        if payload == "request":
            self._wake.set()
        elif payload.startswith("reply:") and payload[6:].isdigit():
            event = self._replies.get(int(payload[6:]))
            if event is not None:
                event.set()

    async def _ensure_table(self, conn: Any) -> None:
        if not self._table_ready:
            await self.table.ensure(conn)
            self._table_ready = True

    async def _notify(self, conn: Any, payload: str) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", REQUESTS_CHANNEL, payload)

    # -- the owner's side ----------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pick and run requests for the instances this daemon owns, until cancelled;
        woken by ``NOTIFY``, and polling every ``lease_timeout / 3`` for a lost one."""
        backoff = Backoff(first=self.cluster.interval, cap=30.0)
        next_clean_up = anyio.current_time()
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                wake = self._wake
                with anyio.move_on_after(self.cluster.interval * random.uniform(0.5, 1.0)):
                    await wake.wait()
                self._wake = anyio.Event()
                try:
                    for request in await self._pick():
                        tg.start_soon(self._serve_one, request)
                    if anyio.current_time() >= next_clean_up:
                        next_clean_up = anyio.current_time() + CLEAN_UP_EVERY_S
                        await self._clean_up()
                    backoff.reset()
                except _DB_ERRORS as e:
                    # The database supervisor handles outages; requests wait in their rows.
                    delay = backoff.next_delay()
                    log.warning("forward.poll_failed", error=str(e), retry_in=round(delay, 2))
                    await anyio.sleep(delay)
                # However many notifications arrive, the loop runs at most this often.
                await anyio.sleep(SERVER_MIN_GAP_S)

    async def _pick(self) -> list[PickedRequest]:
        if not self.is_serving():
            return []
        flows = self.servable()
        if not flows:
            return []
        async with self.cluster.pool.acquire() as conn:
            await self._ensure_table(conn)
            return await self.table.pick(
                conn, list(flows), self.cluster.daemon_id, max_age_s=self.pick_timeout
            )

    async def _clean_up(self) -> None:
        async with self.cluster.pool.acquire() as conn:
            await self._ensure_table(conn)
            deleted = await self.table.clean_up(conn, self.pick_timeout)
        if deleted:
            log.debug("forward.cleaned_up", rows=deleted)

    async def _serve_one(self, request: PickedRequest) -> None:
        log.info(
            "forward.serving", request=request.id, instance=request.instance, cmd=request.command
        )
        recorder = _ProgressRecorder(self, request.id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.record)
            outcome = await self._run_one(request, recorder.emit)
            tg.cancel_scope.cancel()
        outcome.progress = recorder.latest()  # recorded with the reply: none is skipped
        await self._reply(request, outcome)

    async def _run_one(self, request: PickedRequest, emit: Emit) -> _Outcome:
        """Run a picked request here: its reply, or its error."""
        reply: dict[str, Any] | None = None
        error: tuple[str, str] | None = None
        give_back = False
        try:
            reply = await self.run(request.instance, request.command, request.args, emit)
            holder = self.cluster.holder
            reply["served_by"] = {
                "host": holder.host,
                "pid": holder.pid,
                "daemon_id": holder.daemon_id,
            }
        except Exception as e:
            code, message = error_reply_of(e)
            if _is_ownership_error(e):
                code = ErrorCode.NOT_OWNER  # the requester queues it again for the new owner
            give_back = not self.is_serving()  # draining: the next owner runs it
            error = (code, message)
            log.info("forward.failed", request=request.id, code=code, give_back=give_back)
        return _Outcome(reply, error, give_back)

    async def _reply(self, request: PickedRequest, outcome: _Outcome) -> None:
        with anyio.move_on_after(REPLY_DEADLINE_S, shield=True):
            backoff = Backoff(first=0.1, cap=2.0)
            while True:
                if await self._record(request.id, outcome):
                    return
                await anyio.sleep(backoff.next_delay())
        # The database was away longer than that. The request stays `running` under this
        # live daemon, so its requester would wait for it until FORWARD_DEADLINE_S: keep
        # trying, less often, until the reply is in (no longer shielded: a daemon that
        # stops meanwhile lets its membership lock go, and the requester queues the
        # request again for the next owner).
        log.warning("forward.reply_late", request=request.id, retry_every_s=REPLY_RETRY_CAP_S)
        backoff = Backoff(first=1.0, cap=REPLY_RETRY_CAP_S)
        while True:
            await anyio.sleep(backoff.next_delay())
            with anyio.move_on_after(REPLY_DEADLINE_S):
                if await self._record(request.id, outcome):
                    log.info("forward.reply_recorded_late", request=request.id)
                    return

    async def _record(self, request_id: int, outcome: _Outcome) -> bool:
        """One attempt to record a served request's outcome (or to queue it again, when
        draining) and wake its requester; False when the database failed."""
        try:
            async with self.cluster.pool.acquire() as conn:
                if outcome.give_back:
                    await self.table.requeue(conn, request_id, "running")
                    await self._notify(conn, "request")
                else:
                    await self.table.finish(
                        conn,
                        request_id,
                        self.cluster.daemon_id,
                        reply=outcome.reply,
                        error=outcome.error,
                        progress=outcome.progress,
                    )
                    await self._notify(conn, f"reply:{request_id}")
            return True
        except _DB_ERRORS as e:
            log.warning("forward.reply_failed", request=request_id, error=str(e))
            return False

    # -- the standby's side --------------------------------------------------------------
    async def forward(
        self, instance: str, command: str, args: dict[str, Any], emit: Emit | None = None
    ) -> dict[str, Any]:
        """Have the owner of ``instance`` run ``command``; its result, or its error."""
        async with self.cluster.pool.acquire() as conn:
            await self._ensure_table(conn)
            request_id = await self.table.insert(
                conn, instance, self.flow_name_of(instance), command, args, self.cluster.daemon_id
            )
            await self._notify(conn, "request")
        owner = self.cluster.owner_of(instance)
        log.info(
            "forward.sent",
            request=request_id,
            instance=instance,
            cmd=command,
            owner=None if owner is None else owner.describe(),
        )
        if emit is not None:
            who = None if owner is None else owner.describe()
            await emit({"event": "progress", "stage": "forwarded", "name": instance, "owner": who})
        try:
            return await self._wait(request_id, instance, command, _ProgressRelay(emit))
        except BaseException:
            with anyio.move_on_after(WITHDRAW_DEADLINE_S, shield=True):
                await self._withdraw(request_id)
            raise
        finally:
            self._replies.pop(request_id, None)

    async def _withdraw(self, request_id: int) -> bool | None:
        """True: withdrawn; False: a daemon picked it meanwhile; None: the database failed."""
        try:
            async with self.cluster.pool.acquire() as conn:
                return await self.table.withdraw(conn, request_id)
        except _DB_ERRORS as e:
            log.debug("forward.withdraw_failed", request=request_id, error=str(e))
            return None

    async def _wait(
        self, request_id: int, instance: str, command: str, relay: _ProgressRelay
    ) -> dict[str, Any]:
        deadline = anyio.current_time() + FORWARD_DEADLINE_S
        requeues = attempt = 0
        last_state = ""
        blips = _Blips(self.pick_timeout)
        while True:
            woken = self._replies[request_id] = anyio.Event()  # before the read: no gap
            try:
                async with self.cluster.pool.acquire() as conn:
                    state = await self.table.read(conn, request_id, self.cluster.lease_timeout)
            except _DB_ERRORS as e:
                # A blip (a restart, a killed session) must not end the wait: the owner
                # keeps running the command, and its reply is in the row once we can read.
                await blips.wait(e, request_id, instance, command, woken, deadline)
                continue
            blips.reset()
            await relay.relay(state.progress)
            if state.state != last_state:
                last_state, attempt = state.state, 0
            if state.state == "done":
                return state.reply or {}
            again = _requeue_from(state)
            if again is not None:
                if requeues >= MAX_REQUEUES:
                    raise self._timeout(instance, command, f"after {requeues} retries")
                log.warning("forward.requeued", request=request_id, was=again, by=state.served_by)
                try:
                    async with self.cluster.pool.acquire() as conn:
                        if await self.table.requeue(conn, request_id, again):
                            requeues += 1
                        await self._notify(conn, "request")
                except _DB_ERRORS as e:
                    await blips.wait(e, request_id, instance, command, woken, deadline)
                continue
            if state.state == "failed":
                raise ProtocolError(state.error_code or ErrorCode.INTERNAL, state.error or "")
            if state.state == "withdrawn":
                raise self._timeout(instance, command, "it was withdrawn")
            now = anyio.current_time()
            too_long = state.state == "pending" and state.queued_age_s > self.pick_timeout
            if too_long or now >= deadline:
                # A withdraw that failed (a blip, a read-only failover) still ends the wait:
                # no owner picks a request that old. Only one picked just now is followed.
                if state.state != "pending" or await self._withdraw(request_id) is not False:
                    limit = self.pick_timeout if too_long else FORWARD_DEADLINE_S
                    raise self._timeout(instance, command, f"within {limit:g} s")
                continue
            delay = min(POLL_CAP_S, FIRST_POLL_S * 2.0 ** min(attempt, 16))
            attempt += 1
            with anyio.move_on_after(min(delay * random.uniform(0.5, 1.0), deadline - now)):
                await woken.wait()

    def _timeout(self, instance: str, command: str, why: str) -> ForwardingTimeoutError:
        owner = self.cluster.owner_of(instance)
        who = "no daemon (it is being taken over)" if owner is None else owner.describe()
        return ForwardingTimeoutError(
            f"`{command} {instance}` was forwarded to the instance's owner, {who}, which did "
            f"not answer ({why}); it may run an older cocod that does not serve forwarded "
            "commands, or be stuck: send the command to that daemon's socket "
            "(`cocod --socket PATH ...` on its host), or check `cocod status` there",
            owner,
        )


@dataclass
class _Outcome:
    """What serving a request came to, as it is recorded for the requester."""

    reply: dict[str, Any] | None
    error: tuple[str, str] | None
    """(wire code, message) when the command failed."""
    give_back: bool
    """Queue it again for the next owner instead (this daemon drains)."""
    progress: dict[str, Any] | None = None
    """The command's last progress, recorded with the reply so the requester relays it."""


class _ProgressRecorder:
    """The owner's ``emit`` for a request it serves: the latest progress event of each
    source, recorded in the request's row at most every :data:`PROGRESS_EVERY_S`.

    Why the row and not a ``NOTIFY`` per event: the requester already polls the row for
    the reply, and a pass reports far more often than anyone reads. A failed write is
    only logged: progress is a courtesy, the reply is what must arrive.
    """

    def __init__(self, forwarding: Forwarding, request_id: int) -> None:
        self._forwarding = forwarding
        self._request_id = request_id
        self._latest: dict[str, dict[str, Any]] = {}
        self._changed = anyio.Event()

    async def emit(self, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and "source" in event:
            self._latest[str(event["source"])] = event
            self._changed.set()

    def latest(self) -> dict[str, Any] | None:
        """The latest event of each source, as the row holds them (None: none yet)."""
        return {"events": list(self._latest.values())} if self._latest else None

    async def record(self) -> None:
        """Until cancelled (when the command ends)."""
        cluster = self._forwarding.cluster
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            progress = {"events": list(self._latest.values())}
            try:
                with anyio.fail_after(PROGRESS_EVERY_S * 5):
                    async with cluster.pool.acquire() as conn:
                        await self._forwarding.table.report_progress(
                            conn, self._request_id, cluster.daemon_id, progress
                        )
            except (*_DB_ERRORS, TimeoutError) as e:
                log.debug("forward.progress_failed", request=self._request_id, error=str(e))
            await anyio.sleep(PROGRESS_EVERY_S)


class _ProgressRelay:
    """The requester's side: each progress event the owner recorded, sent once to the
    requester's client (a client that left ends the relaying, never the wait)."""

    def __init__(self, emit: Emit | None) -> None:
        self._emit = emit
        self._sent: dict[str, dict[str, Any]] = {}

    async def relay(self, progress: dict[str, Any] | None) -> None:
        events = (progress or {}).get("events")
        if self._emit is None or not isinstance(events, list):
            return
        for event in events:
            if not isinstance(event, dict):
                continue
            source = str(event.get("source"))
            if self._sent.get(source) == event:
                continue
            self._sent[source] = event
            try:
                await self._emit(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self._emit = None
                return


class _Blips:
    """The database errors a requester meets while it waits, retried with backoff.

    Why bounded by ``outage_s`` (the pick timeout) and not only by the forwarding deadline:
    while the database cannot be reached the owner cannot finish the command either, so
    a caller kept waiting for hours learns nothing more; past it the last error is raised
    as it is (``database_unavailable`` on the wire), and the owner never picks the request
    later (it picks none queued longer ago than the pick timeout).
    """

    def __init__(self, outage_s: float) -> None:
        self.outage_s = outage_s
        self.backoff = Backoff(first=FIRST_POLL_S * 2, cap=max(POLL_CAP_S, 5.0))
        self.since: float | None = None

    def reset(self) -> None:
        if self.since is not None:
            log.info("forward.database_back", down_s=round(anyio.current_time() - self.since, 1))
        self.since = None
        self.backoff.reset()

    async def wait(
        self,
        error: Exception,
        request_id: int,
        instance: str,
        command: str,
        woken: anyio.Event,
        deadline: float,
    ) -> None:
        """Wait before the next read, or raise when the outage lasted too long."""
        now = anyio.current_time()
        if self.since is None:
            self.since = now
        give_up_at = min(deadline, self.since + self.outage_s)
        if now >= give_up_at:
            if isinstance(error, CocodError) and not isinstance(error, DatabaseUnavailableError):
                raise error  # the database answered, and refused: say what it said
            raise DatabaseUnavailableError(
                f"`{command} {instance}` was forwarded to the instance's owner, but the "
                f"database could not be read for {now - self.since:.0f} s while waiting for "
                f"its reply ({type(error).__name__}: {error}); the owner may still finish "
                "it: check `cocod status`, and run the update again once the database is up"
            ) from error
        delay = min(self.backoff.next_delay(), give_up_at - now)
        log.warning(
            "forward.wait_read_failed",
            request=request_id,
            error=str(error),
            retry_in=round(delay, 2),
        )
        with anyio.move_on_after(delay):
            await woken.wait()  # a reply's NOTIFY still wakes it: the listener may be up


def _requeue_from(state: RequestState) -> str | None:
    """The state to queue the request again from, when its server cannot finish it."""
    if state.state == "running" and not state.server_is_live:
        return "running"  # its server died (or froze past the lease timeout)
    if state.state == "failed" and state.error_code == ErrorCode.NOT_OWNER:
        return "failed"  # its server lost the instance meanwhile
    return None


def _is_ownership_error(error: BaseException) -> bool:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return isinstance(error, NotOwnerError | LeaseLostError)


__all__ = ["REQUESTS_CHANNEL", "Forwarding", "ForwardingTimeoutError"]
