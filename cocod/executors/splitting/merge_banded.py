"""Phase 2 of the split, faster where chunks hold many atoms: the same choices as
``merging.merge_plain``, with most candidate starts priced once or skipped by a bound.

Why: ``merge_plain`` looks back from every atom over every start that fits in a chunk,
about 1.7 µs of Python per start.  A chunk of code or of short lines holds 20 to 120 atoms,
so that look-back was a third of a split (and a split most of an initial index's CPU).

How the work divides.  For atom ``i`` and a candidate start ``s``, a chunk costs its own
cost (syntax gaps, line breaks, too small) plus what the best previous plan for ``s``
brings.  With overlap, that plan is the cheapest of plans ``s..min(i, q(s))`` (``q(s)``:
the last plan whose next atom ends within ``chunk_overlap`` of the start; see
``merging``).  Once ``q(s) < i`` that range no longer grows with ``i``: the start is
*settled*, and its price ``T(s)`` (previous plan's cost and the overlap's earnings) is
computed once, not once per atom.  Without overlap every start is settled.

Then two bounds skip whole groups of starts.  Every unsettled start (within the overlap of
the chunk's end) and every settled start nearer the end than ``min_chunk_size`` makes a
chunk that is too small, a flat 1,048,576 more: such a group is looked at only when even
its cheapest member (that penalty plus the lowest price or plan cost it could have) could
beat the best of the others, which in a document's middle it never can.  Ties go to the
largest start, and within a start to the largest previous plan, exactly as the plain loop
breaks them (a skipped group could only tie at a strictly higher cost).

It needs offsets in order (atoms' starts and ends never decrease, which the atom walk
guarantees); :func:`merge_banded` returns ``None`` otherwise, and the caller uses the plain
loop.  Plain Python: a numpy version of the settled part was no faster, and a split worker
would have paid 13 MB for numpy.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import pairwise

from .atoms import Atoms

__all__ = ["merge_banded"]

_SYNTAX_LEVEL_GAP_COST = 512
_MISSING_OVERLAP_COST = 512
_PER_LINE_BREAK_LEVEL_GAP_COST = 64
_TOO_SMALL_CHUNK_COST = 1_048_576
_UNSET = 1 << 62
_BIG_LEVEL = 1 << 40


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
    first_starts = starts[:m]
    first_ends = ends[:m]
    if any(a > b for a, b in pairwise(first_starts)) or any(a > b for a, b in pairwise(first_ends)):
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
    # plain loop stops; settle[i]: starts below it are settled at atom i; smalls[i]: the
    # first start whose chunk ..i is smaller than min_chunk_size.
    lows = [bisect_left(first_starts, e - chunk_size) - 1 for e in first_ends]
    smalls = [bisect_right(first_starts, e - min_chunk_size) for e in first_ends]
    if overlap:
        settle = [bisect_left(first_starts, e - overlap) for e in first_ends]
        # last_plan[s]: the last plan whose next atom ends within the overlap of start s.
        last_plan = [bisect_right(first_ends, x + overlap) - 1 for x in first_starts]
        start_bases = [(total - x) * scale // overlap for x in first_starts]
    else:
        settle = list(range(1, m + 1))
        last_plan = []
        start_bases = []

    plan_start = [0]
    plan_prev = [0]
    plan_cost = [0]
    plan_base = [total * scale // overlap if overlap else 0]
    plan_key = [plan_base[0]]
    settled_price: list[int] = []  # T(s)
    settled_prev: list[int] = []  # the previous plan that price is for

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

        end_level = levels[i + 1]
        end_break = boundary[i + 1]
        # Starts stop..i are unsettled (within the overlap of the end), low+1..stop-1
        # settled.  The settled ones go first here; on a tie the unsettled one (a larger
        # start) wins, as in the plain loop, which looks from i down.
        stop = settled_to if settled_to > low + 1 else low + 1
        min_cost = unset
        best_start = best_prev = 0
        s = stop - 1
        if s > low:
            # Too small starts (the ones nearest the end) carry a flat penalty: look at
            # the others first, and at those only if one could still win.
            split = smalls[i] if smalls[i] > low + 1 else low + 1
            if split > s:
                split = s + 1
            top = split - 1  # the others: top..low+1
            if top > low:
                if top < i:
                    inside_level = min(levels[top + 1 : i + 1])
                    inside_break = max(inner[top + 1 : i + 1])
                else:
                    inside_level = _BIG_LEVEL
                    inside_break = 0
                s = top
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
                    if cost < min_cost:
                        min_cost = cost
                        best_start = s
                        best_prev = settled_prev[s]
                    if start_level < inside_level:
                        inside_level = start_level
                    if inner[s] > inside_break:
                        inside_break = inner[s]
                    s -= 1
            s = stop - 1
            if s >= split and not (
                min_cost < unset and min_cost < too_small + min(settled_price[split : s + 1])
            ):
                if stop <= i:
                    inside_level = min(levels[stop : i + 1])
                    inside_break = max(inner[stop : i + 1])
                else:
                    inside_level = _BIG_LEVEL
                    inside_break = 0
                others_cost = min_cost
                min_cost = unset
                while s >= split:
                    start_level = levels[s]
                    cost = settled_price[s] + too_small
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
                    if cost < min_cost and cost <= others_cost:
                        min_cost = cost
                        best_start = s
                        best_prev = settled_prev[s]
                    if start_level < inside_level:
                        inside_level = start_level
                    if inner[s] > inside_break:
                        inside_break = inner[s]
                    s -= 1
                if others_cost < min_cost:
                    min_cost = others_cost
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

    return trace_plan(starts, ends, plan_start, plan_prev, m)


def trace_plan(
    starts: list[int], ends: list[int], plan_start: list[int], plan_prev: list[int], m: int
) -> list[tuple[int, int]]:
    """The chunks of the best plan, first to last: each plan step names the atom its
    chunk starts at and the step before it (both merges fill the same arrays)."""
    chunks: list[tuple[int, int]] = []
    p = m
    while p > 0:
        chunks.append((starts[plan_start[p]], ends[p - 1]))
        p = plan_prev[p]
    chunks.reverse()
    return chunks
