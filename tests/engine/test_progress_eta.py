"""The ETA estimator of a pass (cocod/engine/progress.py) against a fake clock.

A first index spends its first seconds to a minute listing, diffing and loading the model
before any file finishes, and the machine's speed drifts during an hour-long run; the
ETA ``cocod status`` shows must not count the first as work left to repeat and must
follow the second. Each scenario also computes what the old whole-pass (or since-first
-file) average would have said, so the test shows the difference the estimator makes.
"""

from __future__ import annotations

import pytest

from cocod.engine.progress import MAX_MARKS, PassProgress, report, reporting_to

STEP = 0.1  # the engine reports at most every 0.1 s


def run_until(
    progress: PassProgress, rate_at: list[tuple[float, float]], until: float, t: float = 0.0
) -> float:
    """Advance the fake clock from ``t`` to ``until``, finishing rows at the rate given by
    ``rate_at`` (a list of (from time, rows per second)), noting each step as a report
    would. Returns the clock."""
    done = float(progress.processed)
    while t < until - 1e-9:
        t = round(t + STEP, 6)
        rate = next(r for start, r in reversed(rate_at) if t > start)
        done += rate * STEP
        progress.processed = min(int(done + 1e-9), progress.candidates or 0)
        progress.note(now=t)
    return t


def eta_at(progress: PassProgress, now: float) -> float:
    eta = progress.eta_s(now)
    assert eta is not None
    return eta


def test_warm_up_before_the_first_row_is_not_counted_as_work_left() -> None:
    # Listing and the model's load take 40 s; then 5 files/s: 1,000 files end at 240 s.
    p = PassProgress("files", started_at=0.0, listed=1_000, candidates=1_000)
    now = run_until(p, [(0.0, 0.0), (40.0, 5.0)], until=60.0)
    assert p.processed == 100  # 10%
    actual_left = 240.0 - now
    assert eta_at(p, now) == pytest.approx(actual_left, rel=0.05)
    whole_pass = (1_000 - p.processed) / (p.processed / now)
    assert whole_pass > 2 * actual_left  # what the whole-pass average said: 540 s for 180


def test_the_rate_follows_a_machine_getting_busier() -> None:
    # 10 files/s for the first half, then 5 files/s: 1,000 files end at 150 s.
    p = PassProgress("files", started_at=0.0, listed=1_000, candidates=1_000)
    now = run_until(p, [(0.0, 10.0), (50.0, 5.0)], until=130.0)
    assert p.processed == 900  # 90%
    actual_left = 150.0 - now
    assert eta_at(p, now) == pytest.approx(actual_left, rel=0.05)
    since_start = (1_000 - p.processed) / (p.processed / now)
    assert since_start < 0.8 * actual_left  # the average over the pass: 14 s for 20


def test_a_steady_rate_over_a_long_pass_keeps_a_bounded_history() -> None:
    p = PassProgress("files", started_at=0.0, listed=100_000, candidates=100_000)
    now = run_until(p, [(0.0, 0.0), (10.0, 10.0)], until=5_000.0)
    assert len(p._marks) <= MAX_MARKS
    assert p._marks[0][0] == pytest.approx(10.1)  # the origin survives the thinning
    left = (100_000 - p.processed) / 10.0
    assert eta_at(p, now) == pytest.approx(left, rel=0.02)


def test_a_stall_still_gives_an_eta_that_grows() -> None:
    p = PassProgress("files", started_at=0.0, listed=1_000, candidates=1_000)
    now = run_until(p, [(0.0, 10.0)], until=50.0)
    before = eta_at(p, now)
    now = run_until(p, [(0.0, 0.0)], until=now + 40.0, t=now)  # nothing finishes for 40 s
    after = eta_at(p, now)
    assert after > before


def test_without_history_the_whole_pass_average_is_used() -> None:
    # Counters set directly (no reports): the rate so far over the whole pass.
    p = PassProgress("files", started_at=100.0, listed=10_000, candidates=10_000)
    p.processed = 1_234
    assert eta_at(p, 110.0) == pytest.approx(8_766 / 123.4)
    assert PassProgress("files", started_at=0.0, candidates=10).eta_s(5.0) is None


def test_each_report_keeps_a_point_of_history() -> None:
    p = PassProgress("files", listed=10, candidates=10)
    with reporting_to(None):
        report(p)  # nothing finished yet: no point
        assert p._marks == []
        p.processed = 3
        report(p)
    assert [m[1] for m in p._marks] == [3]
