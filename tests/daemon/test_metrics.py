"""``[daemon] metrics``: a real daemon serves Prometheus text on a real port, with every
family the issue lists, and the values move after an edit."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.daemon.harness_ops import free_port, scrape, status

FAMILIES = (
    "cocod_database_up",
    "cocod_instance_state",
    "cocod_instance_paused",
    "cocod_export_rows",
    "cocod_files_pending",
    "cocod_last_success_timestamp_seconds",
    "cocod_update_duration_seconds_bucket",
    "cocod_update_duration_seconds_count",
    "cocod_update_duration_seconds_sum",
    "cocod_rows_written_total",
    "cocod_rows_deleted_total",
    "cocod_chunks_written_total",
    "cocod_chunks_embedded_total",
    "cocod_memo_hits_total",
    "cocod_errors_total",
    "cocod_watcher_events_total",
    "cocod_rescans_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
)


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return float(samples[name][tuple(sorted(labels.items()))])


def test_metrics_endpoint_serves_every_family_and_values_move_after_an_edit(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "first paragraph\n\nsecond paragraph")
    port = free_port()
    config = f'[daemon]\nmetrics = "127.0.0.1:{port}"\n\n' + instance("one", docs, "one_rows")
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        eventually(lambda: status(daemon, "one")["state"] == "WATCHING", "the instance")
        before = eventually(
            lambda: (
                (s := scrape(port))
                and value(s, "cocod_export_rows", instance="one", export="paragraphs") == 2
                and s
            ),
            "the row count in the metrics",
        )
        for family in FAMILIES:
            assert family in before, f"{family} missing from /metrics"
        assert value(before, "cocod_instance_state", instance="one", state="WATCHING") == 1
        assert value(before, "cocod_instance_state", instance="one", state="PAUSED") == 0
        assert value(before, "cocod_instance_paused", instance="one") == 0
        assert value(before, "cocod_database_up") == 1
        assert value(before, "process_resident_memory_bytes") > 10_000_000
        assert value(before, "cocod_rows_written_total", instance="one") == 1
        assert value(before, "cocod_chunks_embedded_total", instance="one") == 2
        assert value(before, "cocod_chunks_written_total", instance="one") == 2
        assert value(before, "cocod_errors_total", instance="one", kind="row") == 0
        assert value(before, "cocod_last_success_timestamp_seconds", instance="one") > (
            time.time() - 300
        )
        passes = value(before, "cocod_update_duration_seconds_count", instance="one")
        assert passes >= 1
        assert value(before, "cocod_update_duration_seconds_bucket", instance="one", le="+Inf") == (
            passes
        )

        write(docs / "a.md", "first paragraph\n\nan edited paragraph\n\na third one")
        write(docs / "b.md", "a new file")

        def moved() -> dict | None:  # type: ignore[type-arg]
            s = scrape(port)
            rows = value(s, "cocod_export_rows", instance="one", export="paragraphs")
            return s if rows == 4 else None

        after = eventually(moved, "the edit in the metrics")
        assert value(after, "cocod_rows_written_total", instance="one") == 3
        # Only the new paragraphs were embedded; the unchanged one was not embedded again.
        assert value(after, "cocod_chunks_embedded_total", instance="one") == 5
        assert value(after, "cocod_watcher_events_total", instance="one") >= 2
        assert value(after, "cocod_chunks_written_total", instance="one") >= 4
        assert value(after, "cocod_update_duration_seconds_count", instance="one") > passes
        assert value(after, "cocod_files_pending", instance="one") == 0

        (docs / "b.md").unlink()
        eventually(
            lambda: value(scrape(port), "cocod_rows_deleted_total", instance="one") == 1,
            "the deletion in the metrics",
        )
    finally:
        assert daemon.stop() == 0
    assert "metrics.listening" in daemon.logs()
