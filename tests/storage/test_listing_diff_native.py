"""The compiled comparison of a listing with the tracking equals the Python one.

:meth:`TrackedListing.diff` runs in C where the helper was built; the Python loop beside it
is the oracle here, over random listings with every kind of difference: changed mtimes or
sizes, "always differs" rows (a None mtime), new and gone keys, keys that are not UTF-8.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocod import native
from cocod.storage.listing_state import TrackedListing

NAMES = st.sampled_from(["a.md", "b/c.md", "caf\u00e9.md", "na\udce9me.md", "x\ny.md", "z"])
ORDINALS = st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**40))
TRACKED = st.dictionaries(NAMES, st.tuples(st.none() | st.integers(0, 3), st.integers(0, 3)))
LISTED = st.dictionaries(NAMES, st.tuples(st.integers(0, 3), st.integers(0, 3)))


def _tracked(rows: dict[str, tuple[int | None, int]]) -> TrackedListing:
    keys = [k.encode("utf-8", "surrogateescape") for k in rows]
    return TrackedListing(keys, [m for m, _ in rows.values()], [s for _, s in rows.values()])


def test_the_helper_is_built() -> None:
    # Were it missing, the tests below would compare the Python loop with itself.
    assert native.HELPER is not None, "cocod/_native.c was not built: run make install"


@settings(max_examples=300, deadline=None)
@given(tracked=TRACKED, listed=LISTED)
def test_same_changed_and_gone_as_python(
    tracked: dict[str, tuple[int | None, int]], listed: dict[str, tuple[int, int]]
) -> None:
    listing = _tracked(tracked)
    fast = listing.diff(listed)
    before = dict(listed)
    saved, native.HELPER = native.HELPER, None
    try:
        slow = listing.diff(listed)
    finally:
        native.HELPER = saved
    assert fast == slow  # the same lists in the same order
    assert listed == before  # the listing is not consumed


@given(ordinal=ORDINALS)
def test_big_ordinals_compare_exactly(ordinal: tuple[int, int]) -> None:
    mtime, size = ordinal
    listing = TrackedListing([b"k"], [mtime], [size])
    assert listing.diff({"k": (mtime, size)}).changed == []
    assert listing.diff({"k": (mtime, size + 1)}).changed == ["k"]


def test_arrays_of_different_lengths_are_refused() -> None:
    assert native.HELPER is not None
    with pytest.raises(ValueError, match="differ in length"):
        native.HELPER.diff_listing([b"a"], [], [], {})
