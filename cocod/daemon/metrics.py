"""Prometheus metrics of the daemon (``[daemon] metrics = "127.0.0.1:9464"``, off by default).

The numbers come from the daemon's live objects — instance states, updater counters,
cached row counts, the progress of running passes — gathered by :func:`metrics_snapshot`,
which ``cocod status --json`` shows too. The snapshot is built on the event loop (it reads
dicts the loop changes) about once a second while metrics are served; the HTTP server,
prometheus-client's own, answers scrapes from its thread with the latest snapshot, so a
scrape never touches the loop and a stuck loop cannot stall a scrape (the numbers then
stop moving, which is what an alert on them should see). The registry is private (not
prometheus-client's global one): what we serve is only what we collect, plus the process'
RSS and CPU from prometheus-client's process collector.

Families (label ``instance`` on all but the process ones and ``cocod_database_up``):
``cocod_instance_state{state}`` (1 for the current state), ``cocod_instance_paused``,
``cocod_export_rows{export}`` (rows per target table, refreshed in the background),
``cocod_files_pending`` (changes not yet committed), ``cocod_last_success_timestamp_seconds``,
``cocod_update_duration_seconds`` (histogram of passes), ``cocod_rows_written_total`` and
``cocod_rows_deleted_total`` (source rows, i.e. files, whose target rows were written or
deleted), ``cocod_chunks_written_total`` (target rows written), ``cocod_chunks_embedded_total``
and ``cocod_memo_hits_total`` (calls of memoized functions — the embedder — computed, and
answered from the memo), ``cocod_errors_total{kind}`` (``row``, ``source``, ``database``,
``pass``), ``cocod_watcher_events_total``, ``cocod_rescans_total``; ``cocod_database_up``;
``process_resident_memory_bytes``, ``process_cpu_seconds_total`` and the other
``process_*`` families.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cocod.daemon.config import MetricsAddress
from cocod.daemon.instance_state import Instance, State
from cocod.runtime.coordination import Backoff

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

log = structlog.get_logger(__name__)

REFRESH_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 2.0
"""The HTTP thread's shutdown polls every 0.5 s; past this it is abandoned (a daemon thread)."""


def metrics_snapshot(daemon: Daemon) -> dict[str, Any]:
    """Every metric's value now, as plain JSON (call on the event loop; never waits)."""
    return {
        "at": time.time(),
        "database_up": daemon.database.is_up,
        "instances": {
            i.name: _instance_snapshot(i) for i in list(daemon.instances.by_name.values())
        },
        "process": _process_snapshot(),
    }


def _instance_snapshot(instance: Instance) -> dict[str, Any]:
    counters = instance.counters()
    calls = instance.function_calls()
    snapshot = instance.updater.snapshot() if instance.updater is not None else None
    pending = 0 if snapshot is None else int(snapshot["pending_changes"])
    running = instance.progress.running()
    if running is not None and running.candidates is not None:
        pending = max(pending, running.candidates - running.processed)
    return {
        "state": str(instance.state),
        "paused": instance.paused,
        "live": instance.config.live,
        "rows": dict(instance.row_counts or {}),
        "files_pending": pending,
        "last_success_at": None if snapshot is None else snapshot["last_pass_at"],
        "update_duration_seconds": {
            "buckets": counters.durations.cumulative(),
            "count": counters.durations.count,
            "sum": round(counters.durations.total, 6),
        },
        "rows_written": counters.rows_written,
        "rows_deleted": counters.rows_deleted,
        "chunks_written": instance.progress.rows_written,
        "chunks_embedded": calls.computed,
        "memo_hits": calls.hits,
        "errors": dict(counters.errors),
        "watcher_events": counters.watcher_events,
        "rescans": counters.rescans,
    }


def _process_snapshot() -> dict[str, Any]:
    times = os.times()
    return {"rss_bytes": _rss_bytes(), "cpu_seconds": round(times.user + times.system, 3)}


def _rss_bytes() -> int | None:
    """Resident set size from /proc (a memory read, not disk I/O); None elsewhere."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 256).split()
    finally:
        os.close(fd)
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") if len(fields) > 1 else None


class SnapshotCollector(Collector):
    """Turns the latest snapshot into metric families (runs in the HTTP server's thread)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {"database_up": True, "instances": {}}

    def collect(self) -> Iterator[Metric]:
        snapshot = self.latest  # one reference: the loop swaps in a new dict, never edits
        instances: dict[str, dict[str, Any]] = snapshot["instances"]
        up = GaugeMetricFamily("cocod_database_up", "1 while the database answers")
        up.add_metric([], 1.0 if snapshot["database_up"] else 0.0)
        yield up
        state = GaugeMetricFamily(
            "cocod_instance_state",
            "1 for the instance's current state",
            labels=["instance", "state"],
        )
        paused = _gauge("cocod_instance_paused", "1 while paused by `cocod pause`")
        rows = GaugeMetricFamily(
            "cocod_export_rows", "Rows in each export's table", labels=["instance", "export"]
        )
        pending = _gauge("cocod_files_pending", "Changed files not yet committed")
        last = _gauge("cocod_last_success_timestamp_seconds", "When a pass last succeeded")
        durations = HistogramMetricFamily(
            "cocod_update_duration_seconds", "Duration of successful passes", labels=["instance"]
        )
        written = _counter("cocod_rows_written", "Source rows (files) whose rows were written")
        deleted = _counter("cocod_rows_deleted", "Source rows (files) whose rows were deleted")
        chunks = _counter("cocod_chunks_written", "Target rows (chunks) written")
        embedded = _counter("cocod_chunks_embedded", "Memoized calls computed (embeddings)")
        hits = _counter("cocod_memo_hits", "Memoized calls answered from the memo")
        errors = CounterMetricFamily(
            "cocod_errors", "Failures by kind", labels=["instance", "kind"]
        )
        events = _counter("cocod_watcher_events", "Change hints from the file watcher")
        rescans = _counter("cocod_rescans", "Full passes after the first (rescans, bursts)")
        for name, i in sorted(instances.items()):
            for s in State:
                state.add_metric([name, str(s)], 1.0 if i["state"] == str(s) else 0.0)
            paused.add_metric([name], 1.0 if i["paused"] else 0.0)
            for export, count in sorted(i["rows"].items()):
                if count is not None:
                    rows.add_metric([name, export], float(count))
            pending.add_metric([name], float(i["files_pending"]))
            if i["last_success_at"] is not None:
                last.add_metric([name], float(i["last_success_at"]))
            d = i["update_duration_seconds"]
            durations.add_metric([name], [(le, float(n)) for le, n in d["buckets"]], d["sum"])
            written.add_metric([name], float(i["rows_written"]))
            deleted.add_metric([name], float(i["rows_deleted"]))
            chunks.add_metric([name], float(i["chunks_written"]))
            embedded.add_metric([name], float(i["chunks_embedded"]))
            hits.add_metric([name], float(i["memo_hits"]))
            for kind in sorted({"row", "source", "database", "pass", *i["errors"]}):
                errors.add_metric([name, kind], float(i["errors"].get(kind, 0)))
            events.add_metric([name], float(i["watcher_events"]))
            rescans.add_metric([name], float(i["rescans"]))
        yield from (state, paused, rows, pending, last, durations, written, deleted)
        yield from (chunks, embedded, hits, errors, events, rescans)


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["instance"])


def _counter(name: str, documentation: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=["instance"])


class MetricsServer:
    """Serves the daemon's metrics over HTTP while it runs; ``port`` once listening."""

    def __init__(self, daemon: Daemon, address: MetricsAddress) -> None:
        self.daemon = daemon
        self.address = address
        self.port: int | None = None
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Ready once listening, or once the first bind failed (retried with backoff: a
        port taken by something else must not stop the indexing)."""
        self.collector.latest = metrics_snapshot(self.daemon)
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                server, thread = await anyio.to_thread.run_sync(
                    partial(
                        start_http_server,
                        self.address.port,
                        addr=self.address.host,
                        registry=self.registry,
                    )
                )
                break
            except OSError as e:
                delay = backoff.next_delay()
                log.error(
                    "metrics.bind_failed",
                    address=str(self.address),
                    error=str(e),
                    retry_in=round(delay, 1),
                    hint="choose a free port in [daemon] metrics",
                )
                task_status.started()
                task_status = anyio.TASK_STATUS_IGNORED
                await anyio.sleep(delay)
        self.port = int(server.server_port)
        log.info("metrics.listening", host=self.address.host, port=self.port)
        task_status.started()
        try:
            while True:
                self.collector.latest = metrics_snapshot(self.daemon)
                await anyio.sleep(REFRESH_SECONDS)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_SECONDS):
                await anyio.to_thread.run_sync(_stop_server, server, thread, abandon_on_cancel=True)


def _stop_server(server: Any, thread: threading.Thread) -> None:
    server.shutdown()  # returns once serve_forever's loop has exited (it polls at 0.5 s)
    server.server_close()
    thread.join(STOP_TIMEOUT_SECONDS)
