"""Phase 2 of the split, faster where chunks hold many atoms: the same choices as
``merging.merge_plain``, with most candidate starts priced in bulk.

Why: ``merge_plain`` looks back from every atom over every start that fits in a chunk,
about 1.7 µs of Python per start.  A chunk of code or of short lines holds 20 to 120 atoms,
so that look-back was a third of a split (and a split most of an initial index's CPU).

How the work divides.  For atom ``i`` and a candidate start ``s``, the chunk's own cost
(syntax gaps, line breaks, too small: ``cost0(s, i)``) depends on the atoms only, so it is
computed for a whole band of ``(i, s)`` pairs at once with numpy (:func:`_band`).  The rest,
the best previous plan for that start, depends on the plans chosen so far.  With overlap,
the previous plan for ``s`` is the cheapest of plans ``s..min(i, q(s))`` (``q(s)``: the last
plan whose next atom ends within ``chunk_overlap`` of the start; see ``merging``).  Once
``q(s) < i`` that range no longer grows with ``i``: the start is *settled*, and its price
``T(s)`` (previous plan's cost and the overlap's earnings) is fixed.  Settled starts, all
but the few within ``chunk_overlap`` of the chunk's end, are then one vector sum and one
``argmin`` (``cost0 + T``) per atom; the unsettled ones are looked at one by one, as in
``merge_plain``.  Without overlap every start is settled (``T(s)`` is the plan's cost plus
the flat cost).  Ties go to the largest start, and within a start to the largest previous
plan, exactly as the plain loop breaks them; all arithmetic is on int64, far from overflow.

It needs offsets in order (atoms' starts and ends never decrease, which the atom walk
guarantees); :func:`merge_banded` returns ``None`` otherwise, and the caller uses the plain
loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .atoms import Atoms

__all__ = ["BAND_MIN_STARTS", "merge_banded"]

_SYNTAX_LEVEL_GAP_COST = 512
_MISSING_OVERLAP_COST = 512
_PER_LINE_BREAK_LEVEL_GAP_COST = 64
_TOO_SMALL_CHUNK_COST = 1_048_576
_UNSET = 1 << 62
_BIG_LEVEL = 1 << 40

BAND_MIN_STARTS = 8
"""Settled starts below this many are priced in Python: a vector sum costs a few µs."""
_BAND_CELLS = 1 << 16
"""Cells of ``cost0`` computed per block of atoms (int64: half a megabyte a matrix)."""


def merge_banded(
    atoms: Atoms, chunk_size: int, min_chunk_size: int, overlap: int
) -> list[tuple[int, int]] | None:
    """The chosen chunks as byte ranges, in order, or ``None`` when the atoms' offsets are
    not in order (then only the plain loop applies)."""
    starts, ends = atoms.starts, atoms.ends
    levels, inner, boundary = atoms.levels, atoms.inner_breaks, atoms.boundary_breaks
    m = len(starts) - 1
    if m <= 0:
        return []
    s_np = np.asarray(starts, dtype=np.int64)
    e_np = np.asarray(ends, dtype=np.int64)
    if np.any(s_np[1:m] < s_np[: m - 1]) or np.any(e_np[1:m] < e_np[: m - 1]):
        return None
    total = atoms.text.nbytes
    scale = _MISSING_OVERLAP_COST
    gap_costs = [0]
    for k in range(1, max(levels) + 2):
        gap_costs.append(gap_costs[k - 1] + _SYNTAX_LEVEL_GAP_COST // k)
    lb_cost = _PER_LINE_BREAK_LEVEL_GAP_COST
    too_small = _TOO_SMALL_CHUNK_COST
    unset = _UNSET
    flat = _MISSING_OVERLAP_COST // 2

    # lows[i]: the largest start whose chunk ..i is over chunk_size (-1: none), where the
    # plain loop stops; settle[i]: starts below it are settled at atom i.
    first_ends = e_np[:m]
    lows = (np.searchsorted(s_np[:m], first_ends - chunk_size, "left") - 1).tolist()
    if overlap:
        settle = np.searchsorted(s_np[:m], first_ends - overlap, "left").tolist()
        # q[s]: the last plan whose next atom ends within the overlap of start s.
        q_np = np.searchsorted(first_ends, s_np[:m] + overlap, "right") - 1
        last_plan = q_np.tolist()
        start_bases = ((total - s_np[:m]) * scale // overlap).tolist()
    else:
        settle = list(range(1, m + 1))
        last_plan = []
        start_bases = []
    widths = [i - lows[i] for i in range(m)]

    plan_start = [0]
    plan_prev = [0]
    plan_cost = [0]
    plan_base = [total * scale // overlap if overlap else 0]
    plan_key = [plan_base[0]]
    settled_price: list[int] = []  # T(s)
    settled_prev: list[int] = []  # the previous plan that price is for
    price_np = np.zeros(m, dtype=np.int64)
    band: Any = None
    band_first = band_stop = 0
    arrays: tuple[Any, ...] = ()

    for i in range(m):
        end = ends[i]
        low = lows[i]
        if low == i:  # atom i alone is over chunk_size: a chunk of its own
            min_cost = plan_cost[i] + (too_small if end - starts[i] < min_chunk_size else 0)
            plan_start.append(i)
            plan_prev.append(i)
            plan_cost.append(min_cost)
            base = (total - end) * scale // overlap if overlap else 0
            plan_base.append(base)
            plan_key.append(min_cost + base)
            continue
        settled_to = settle[i] if settle[i] <= i + 1 else i + 1
        while len(settled_price) < settled_to:
            s = len(settled_price)
            if overlap:
                r = last_plan[s]
                if r <= s:
                    prev = s
                else:
                    segment = plan_key[s : r + 1]
                    prev = r - segment[::-1].index(min(segment))
                price = plan_cost[prev] + scale
                gain = plan_base[prev] - start_bases[s]
                if gain < 0:
                    price += gain
            else:
                prev = s
                price = plan_cost[s] + flat
            settled_price.append(price)
            settled_prev.append(prev)
            price_np[s] = price

        end_level = levels[i + 1]
        end_break = boundary[i + 1]
        # Starts stop..i are unsettled (within the overlap of the end), low+1..stop-1
        # settled.  The settled ones go first here; on a tie the unsettled one (a larger
        # start) wins, as in the plain loop, which looks from i down.
        stop = settled_to if settled_to > low + 1 else low + 1
        min_cost = unset
        best_start = best_prev = 0
        s = stop - 1
        if s - low >= BAND_MIN_STARTS and s > low:
            if i >= band_stop:
                band_first = i
                band_stop = _band_stop(widths, i)
                if not arrays:
                    arrays = (
                        s_np, e_np, *(np.asarray(v, dtype=np.int64) for v in
                        (levels, inner, boundary, gap_costs)),
                    )  # fmt: skip
                band = _band(
                    arrays, band_first, band_stop, max(widths[band_first:band_stop]),
                    min_chunk_size,
                )  # fmt: skip
            row = band[i - band_first]
            values = row[i - s : i - low] + price_np[low + 1 : s + 1][::-1]
            k = int(values.argmin())
            min_cost = int(values[k])
            best_start = s - k
            best_prev = settled_prev[best_start]
        elif s > low:
            if stop <= i:
                inside_level = min(levels[stop : i + 1])
                inside_break = max(inner[stop : i + 1])
            else:
                inside_level = _BIG_LEVEL
                inside_break = 0
            while s > low:
                start_level = levels[s]
                cost = settled_price[s]
                if start_level > inside_level:
                    cost += gap_costs[start_level - inside_level]
                if end_level > inside_level:
                    cost += gap_costs[end_level - inside_level]
                if inside_break:
                    start_break = boundary[s]
                    if inside_break > start_break:
                        cost += (inside_break - start_break) * lb_cost
                    if inside_break > end_break:
                        cost += (inside_break - end_break) * lb_cost
                if end - starts[s] < min_chunk_size:
                    cost += too_small
                if cost < min_cost:
                    min_cost = cost
                    best_start = s
                    best_prev = settled_prev[s]
                if start_level < inside_level:
                    inside_level = start_level
                if inner[s] > inside_break:
                    inside_break = inner[s]
                s -= 1
        if stop <= i and not (
            # Every unsettled chunk is too small: skip them when even the lowest price one
            # could have (too small, cheapest plan, most overlap) loses to a settled one.
            min_cost < unset
            and end - starts[stop] < min_chunk_size
            and min_cost
            < too_small
            + scale
            + min(min(plan_cost[stop : i + 1]), min(plan_key[stop : i + 1]) - start_bases[stop])
        ):
            # Every plan s..i is eligible for these starts: the cheapest (the largest on
            # ties) is the previous one.
            inside_level = _BIG_LEVEL
            inside_break = 0
            best_key = unset
            best_plan = i
            settled_cost = min_cost
            min_cost = unset
            s = i
            while s >= stop:
                start_level = levels[s]
                cost = 0
                if start_level > inside_level:
                    cost = gap_costs[start_level - inside_level]
                if end_level > inside_level:
                    cost += gap_costs[end_level - inside_level]
                if inside_break:
                    start_break = boundary[s]
                    if inside_break > start_break:
                        cost += (inside_break - start_break) * lb_cost
                    if inside_break > end_break:
                        cost += (inside_break - end_break) * lb_cost
                if end - starts[s] < min_chunk_size:
                    cost += too_small
                key = plan_key[s]
                if key < best_key:
                    best_key = key
                    best_plan = s
                prev_base = plan_base[best_plan]
                start_base = start_bases[s]
                cost += plan_cost[best_plan] + scale
                if prev_base < start_base:
                    cost += prev_base - start_base
                if cost < min_cost and cost <= settled_cost:
                    min_cost = cost
                    best_start = s
                    best_prev = best_plan
                if start_level < inside_level:
                    inside_level = start_level
                if inner[s] > inside_break:
                    inside_break = inner[s]
                s -= 1
            if settled_cost < min_cost:
                min_cost = settled_cost
        plan_start.append(best_start)
        plan_prev.append(best_prev)
        plan_cost.append(min_cost)
        base = (total - end) * scale // overlap if overlap else 0
        plan_base.append(base)
        plan_key.append(min_cost + base)

    chunks: list[tuple[int, int]] = []
    p = m
    while p > 0:
        chunks.append((starts[plan_start[p]], ends[p - 1]))
        p = plan_prev[p]
    chunks.reverse()
    return chunks


def _band_stop(widths: list[int], first: int) -> int:
    """The end of the block of atoms starting at ``first`` whose band fits the budget."""
    width = 1
    stop = first
    n = len(widths)
    while stop < n:
        w = max(width, widths[stop] + 1)
        if w * (stop + 1 - first) > _BAND_CELLS and stop > first:
            break
        width = w
        stop += 1
    return stop


def _band(arrays: tuple[Any, ...], first: int, stop: int, width: int, min_chunk_size: int) -> Any:
    """``cost0(s, i)`` for atoms ``first <= i < stop`` and starts ``s = i - j``, ``j`` below
    ``width`` (columns past ``i`` hold junk, never read): the chunk's syntax-gap,
    line-break and too-small costs, as the plain loop computes them for ``s..i``."""
    s_np, e_np, lv, inn, bnd, gaps = arrays
    rows = np.arange(first, stop, dtype=np.int64)[:, None]
    cols = np.arange(width, dtype=np.int64)[None, :]
    start_idx = np.maximum(rows - cols, 0)
    # inside(s, i) covers atoms s+1..i: column j's inside adds atom i - j + 1.
    inside_idx = np.minimum(start_idx + 1, rows)
    level_in = lv[inside_idx]
    level_in[:, 0] = _BIG_LEVEL
    inside_level = np.minimum.accumulate(level_in, axis=1)
    break_in = inn[inside_idx]
    break_in[:, 0] = 0
    inside_break = np.maximum.accumulate(break_in, axis=1)
    start_level = lv[start_idx]
    end_level = lv[rows + 1]
    cost = gaps[np.maximum(start_level - inside_level, 0)]
    cost += gaps[np.maximum(end_level - inside_level, 0)]
    lines = np.maximum(inside_break - bnd[start_idx], 0)
    lines += np.maximum(inside_break - bnd[rows + 1], 0)
    cost += lines * _PER_LINE_BREAK_LEVEL_GAP_COST
    small = (e_np[rows] - s_np[start_idx]) < min_chunk_size
    cost += small * _TOO_SMALL_CHUNK_COST
    return cost
