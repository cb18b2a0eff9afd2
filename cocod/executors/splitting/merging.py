"""Phase 2 of the split: choose chunks made of consecutive atoms, as v0's
``merge_atom_chunks`` does.

A dynamic programme over atom ends.  ``plans[p]`` is the best plan whose last chunk ends with
atom ``p - 1``.  For each atom ``i`` it considers chunks ``start..i`` for ``start = i, i-1,
...`` until one is larger than ``chunk_size``, each costing:

* a *syntax gap* cost when an edge of the chunk is a less significant boundary than one inside
  it (``512/1 + 512/2 + ... + 512/d`` for ``d`` levels, each term rounded down),
* 64 per line-break level an edge has less than the inside (a chunk that holds a blank line
  should start and end at blank lines),
* 1,048,576 when it is smaller than ``min_chunk_size``,
* without overlap, a flat 256 per chunk; with overlap, 512 less what the overlap with the
  previous chunk earns (512 per ``chunk_overlap`` bytes, from a per-position cost base).

With overlap, the previous plan is the one v0's heap of the candidates seen so far for this
atom gives, cheapest first, after dropping from the top those that would overlap by more than
``chunk_overlap`` (measured to the end of the candidate's *next* atom, as v0 does).  Since a
candidate that overlaps too much does so for every earlier start too, that heap computes a
sliding-window minimum, kept here in a monotone list (amortised O(1) a step instead of a heap
push and pops: the same choices, ties included, at a fraction of the Python work).  The
first chunk larger than ``chunk_size`` ends the look-back; if it is the single atom ``i`` (an
atom larger than a chunk), it becomes a chunk of its own.  All arithmetic is on integers,
rounded where v0's ``usize`` arithmetic rounds, so ties break the same way.

:func:`merge` runs this loop (:func:`merge_plain`) on short documents and, past
:data:`BANDED_MIN_ATOMS` atoms, ``merge_banded``'s equivalent, which prices each start once and
skips groups of starts by a bound; both choose the same chunks.
"""

from __future__ import annotations

from .atoms import Atoms
from .merge_banded import merge_banded, trace_plan

__all__ = ["BANDED_MIN_ATOMS", "merge", "merge_plain"]

BANDED_MIN_ATOMS = 24
"""Fewer atoms than this are merged by the plain loop: the set-up (bisections, prices)
would cost more than it saves."""

_SYNTAX_LEVEL_GAP_COST = 512
_MISSING_OVERLAP_COST = 512
_PER_LINE_BREAK_LEVEL_GAP_COST = 64
_TOO_SMALL_CHUNK_COST = 1_048_576
_UNSET = 1 << 62


def merge(
    atoms: Atoms, chunk_size: int, min_chunk_size: int, overlap: int
) -> list[tuple[int, int]]:
    """The chosen chunks as byte ranges, in order."""
    if len(atoms.starts) > BANDED_MIN_ATOMS:
        chunks = merge_banded(atoms, chunk_size, min_chunk_size, overlap)
        if chunks is not None:
            return chunks
    return merge_plain(atoms, chunk_size, min_chunk_size, overlap)


def merge_plain(
    atoms: Atoms, chunk_size: int, min_chunk_size: int, overlap: int
) -> list[tuple[int, int]]:
    """The chosen chunks as byte ranges, in order: the look-back loop, one start at a time."""
    starts, ends = atoms.starts, atoms.ends
    levels = atoms.levels
    inner = atoms.inner_breaks
    boundary = atoms.boundary_breaks
    m = len(starts) - 1  # without the sentinel
    if m <= 0:
        return []
    total = atoms.text.nbytes

    # cost_base(offset) = (total - offset) * 512 // overlap, v0's per-position overlap base.
    scale = _MISSING_OVERLAP_COST
    # gap_costs[d] = 512/1 + 512/2 + ... + 512/d (each term rounded down); levels are stack
    # depths, so no gap exceeds the deepest level.
    gap_costs = [0]
    for k in range(1, max(levels) + 2):
        gap_costs.append(gap_costs[k - 1] + _SYNTAX_LEVEL_GAP_COST // k)
    lb_cost = _PER_LINE_BREAK_LEVEL_GAP_COST
    too_small = _TOO_SMALL_CHUNK_COST
    unset = _UNSET

    # v0's overlap cost base of each atom's start, computed once.
    start_bases = [(total - x) * scale // overlap for x in starts] if overlap else []

    plan_start = [0]
    plan_prev = [0]
    plan_cost = [0]
    plan_base = [total * scale // overlap if overlap else 0]
    # With overlap, plan_key[p] orders the previous-plan candidates (v0's heap key).
    plan_key = [plan_base[0]]
    flat = _MISSING_OVERLAP_COST // 2
    for i in range(m):
        end = ends[i]
        end_level = levels[i + 1]
        end_break = boundary[i + 1]
        min_cost = unset
        best_start = 0
        best_prev = 0
        inside_level = unset
        inside_break = 0
        start_idx = i
        # v0's candidate heap, as the sliding-window minimum it computes: the candidates
        # are the plans start_idx..i, and one stops being eligible for good once it would
        # overlap by more than chunk_overlap (as start_idx falls, the eligible indices only
        # shrink from the top).  ``window[head:]`` holds candidate plans, indices decreasing
        # and keys non-decreasing, so ``window[head]`` is the cheapest eligible one, the
        # largest index winning ties, as in v0's heap.
        window: list[int] = []
        head = 0
        while True:
            start = starts[start_idx]
            start_level = levels[start_idx]
            cost = 0
            if start_level > inside_level:
                cost = gap_costs[start_level - inside_level]
            if end_level > inside_level:
                cost += gap_costs[end_level - inside_level]
            if inside_break:
                start_break = boundary[start_idx]
                if inside_break > start_break:
                    cost += (inside_break - start_break) * lb_cost
                if inside_break > end_break:
                    cost += (inside_break - end_break) * lb_cost
            size = end - start
            if size < min_chunk_size:
                cost += too_small
            if size > chunk_size:
                if min_cost == unset:
                    min_cost = cost + plan_cost[start_idx]
                    best_start = start_idx
                    best_prev = start_idx
                break
            if overlap:
                limit = start + overlap
                n_window = len(window)
                while head < n_window and ends[window[head]] > limit:
                    head += 1
                key = plan_key[start_idx]
                while n_window > head and plan_key[window[-1]] > key:
                    window.pop()
                    n_window -= 1
                window.append(start_idx)
                prev = window[head]
                prev_base = plan_base[prev]
                start_base = start_bases[start_idx]
                cost += plan_cost[prev] + scale
                if prev_base < start_base:
                    cost += prev_base - start_base
            else:
                prev = start_idx
                cost += plan_cost[prev] + flat
            if cost < min_cost:
                min_cost = cost
                best_start = start_idx
                best_prev = prev
            if start_idx == 0:
                break
            if start_level < inside_level:
                inside_level = start_level
            if inner[start_idx] > inside_break:
                inside_break = inner[start_idx]
            start_idx -= 1
        plan_start.append(best_start)
        plan_prev.append(best_prev)
        plan_cost.append(min_cost)
        base = (total - end) * scale // overlap if overlap else 0
        plan_base.append(base)
        plan_key.append(min_cost + base)

    return trace_plan(starts, ends, plan_start, plan_prev, m)
