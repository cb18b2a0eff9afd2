"""The single committer of an update pass: batches row commits, retries what fails.

Rows are evaluated concurrently and their commits arrive on a bounded stream; the
committer applies up to :data:`MAX_ROWS_PER_TRANSACTION` of them per transaction. A write
that fails for a reason that may pass (a lost connection, a serialization failure or
deadlock, the server restarting) is retried in the same pass with capped exponential
backoff and jitter; then the batch is retried row by row so one bad row cannot hold the
others back; only what still fails is counted as a row error, which the next pass retries.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from cocod.engine.interfaces import RowCommit, StateStore
from cocod.engine.stats import SourceUpdateStats
from cocod.errors import DatabaseUnavailableError, LeaseError, RowError

MAX_ROWS_PER_TRANSACTION = 64
BATCH_COMMIT_ATTEMPTS = 4
"""Attempts for a whole batch before it is split into single rows."""
ROW_COMMIT_ATTEMPTS = 3
"""Attempts for each row of a split batch before it counts as a row error."""
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 2.0
COMMIT_DEADLINE_S = 30.0
"""A commit runs shielded from cancellation (a drain lets it finish), but never longer."""


class Outcome(enum.Enum):
    INSERTED = "num_insertions"
    UPDATED = "num_updates"
    REPROCESSED = "num_reprocesses"
    DELETED = "num_deletions"
    NO_CHANGE = "num_no_change"


@dataclass
class PendingCommit:
    commit: RowCommit
    outcome: Outcome


class CommitDeadlineError(TimeoutError):
    """A commit did not finish within :data:`COMMIT_DEADLINE_S` and was abandoned."""


def backoff_delay(attempt: int) -> float:
    """Capped exponential backoff with full jitter in its upper half (never zero)."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * float(1 << min(attempt, 30)))
    return ceiling * random.uniform(0.5, 1.0)


def describe_error(e: BaseException) -> str:
    return str(e) if isinstance(e, RowError | OSError) else f"{type(e).__name__}: {e}"


async def _commit_once(store: StateStore, commits: Sequence[RowCommit]) -> None:
    # Shielded: cancelling a pass (daemon drain, abort) lets the transaction in flight
    # finish instead of cutting it off mid-way; the deadline bounds that wait.
    with anyio.move_on_after(COMMIT_DEADLINE_S, shield=True) as scope:
        await store.commit_rows(commits)
    if scope.cancelled_caught:
        raise CommitDeadlineError(
            f"a commit of {len(commits)} row(s) took over {COMMIT_DEADLINE_S:g} s and was "
            "rolled back; is a lock held on the target table?"
        )


async def commit_with_retries(
    store: StateStore, commits: Sequence[RowCommit], attempts: int, logger: Any
) -> None:
    """Commit, retrying transient failures; the last error (or a permanent one) is raised."""
    for attempt in range(attempts):
        try:
            await _commit_once(store, commits)
            return
        except Exception as e:
            transient = isinstance(e, CommitDeadlineError) or store.is_transient_error(e)
            if not transient or attempt + 1 >= attempts:
                raise
            delay = backoff_delay(attempt)
            logger.warning(
                "row.commit_retry",
                rows=len(commits),
                attempt=attempt + 1,
                delay_s=round(delay, 3),
                error=describe_error(e),
            )
        await anyio.sleep(delay)  # not shielded: a cancelled pass stops retrying at once


RowsDone = Callable[[int, int], None]
"""Told (rows finished, target rows written) after each batch, for progress reporting."""


async def run_committer(
    store: StateStore,
    receive: MemoryObjectReceiveStream[PendingCommit],
    stats: SourceUpdateStats,
    logger: Any,
    on_done: RowsDone | None = None,
) -> None:
    async with receive:
        async for first in receive:
            batch = [first]
            while len(batch) < MAX_ROWS_PER_TRANSACTION:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            done = await commit_batch(store, batch, stats, logger)
            if on_done is not None:
                written = sum(len(w.upserts) for p in done for w in p.commit.writes.values())
                on_done(len(batch), written)


async def commit_batch(
    store: StateStore, batch: list[PendingCommit], stats: SourceUpdateStats, logger: Any
) -> list[PendingCommit]:
    """Commit a batch (row by row when it fails); returns the rows that committed."""
    try:
        await commit_with_retries(store, [p.commit for p in batch], BATCH_COMMIT_ATTEMPTS, logger)
        done = batch
    except LeaseError:
        raise  # another process owns the flow now: stop the pass, write nothing more
    except Exception as e:
        if store.is_unavailable_error(e):
            # Nothing will commit row by row either: stop the pass. Its rows are still
            # untracked or old, so the next pass (once the database is back) redoes them.
            raise DatabaseUnavailableError(
                f"committing {len(batch)} row(s) failed {BATCH_COMMIT_ATTEMPTS} times: the "
                f"database cannot be reached ({describe_error(e)}); the rows are retried "
                "when it is back"
            ) from e
        transient = isinstance(e, CommitDeadlineError) or store.is_transient_error(e)
        if len(batch) == 1 and not transient:
            _count_failure(batch[0], e, stats, logger)
            return []
        # Isolate the failing row(s): every other row still commits on its own (and a
        # lone row whose failure may pass gets its own further attempts).
        done = []
        for p in batch:
            try:
                await commit_with_retries(store, [p.commit], ROW_COMMIT_ATTEMPTS, logger)
                done.append(p)
            except Exception as row_error:
                if store.is_unavailable_error(row_error):
                    raise DatabaseUnavailableError(
                        f"committing row {p.commit.key!r} failed: the database cannot be "
                        f"reached ({describe_error(row_error)}); it is retried when it is back"
                    ) from row_error
                _count_failure(p, row_error, stats, logger)
    for p in done:
        setattr(stats, p.outcome.value, getattr(stats, p.outcome.value) + 1)
        stats.num_ends += 1
    return done


def _count_failure(p: PendingCommit, e: Exception, stats: SourceUpdateStats, logger: Any) -> None:
    stats.num_errors += 1
    stats.num_ends += 1
    logger.error("row.commit_failed", key=p.commit.key, error=describe_error(e))
