"""A source's tracked ordinals, read while its listing is walked, and the comparison.

Why not compare in SQL: a full pass of a large source used to send its listing to the
server, which parsed it and hash-joined it with the tracking after the stat() walk, in
series with it. Reading the covering index instead starts before the walk and runs on
the server's core while the walk runs on this one; what is left after the walk is one
dict pop per tracked row (see :meth:`~cocod.storage.state.PostgresStateStore.load_listing_state`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cocod import native
from cocod.engine.interfaces import ListingDiff, Ordinal


class TrackedListing:
    """A source's tracked (key, ordinal), three parallel arrays, as
    :meth:`~cocod.storage.state.PostgresStateStore.load_listing_state`
    read them; the ordinal is None where the logic fingerprint changed (or the file was
    recorded while racy), so such a row always differs from the listing."""

    def __init__(
        self, keys: Sequence[bytes], mtimes: Sequence[int | None], sizes: Sequence[int]
    ) -> None:
        if not len(keys) == len(mtimes) == len(sizes):
            raise ValueError("tracked listing arrays differ in length")
        self._keys, self._mtimes, self._sizes = keys, mtimes, sizes

    def __len__(self) -> int:
        return len(self._keys)

    def diff(self, listed: Mapping[str, Ordinal]) -> ListingDiff:
        """Listed keys that are new or changed, and tracked keys no longer listed.

        Pure CPU, one dict pop per tracked row (callers run it in a worker thread when
        it is large). Keys that cannot be stored are never tracked, so they stay in the
        copy of the listing and come out as changed: processing reports their error.
        """
        if native.HELPER is not None and type(listed) is dict:
            # The same loop in C (cocod/_native.c): at 50,000 rows, 3.8 ms against 8.6.
            changed_c, gone_c = native.HELPER.diff_listing(
                self._keys, self._mtimes, self._sizes, listed
            )
            return ListingDiff(changed=changed_c, gone=gone_c)
        remaining = dict(listed)
        pop = remaining.pop
        changed: list[str] = []
        gone: list[str] = []
        for stored, mtime, size in zip(self._keys, self._mtimes, self._sizes, strict=True):
            key = stored.decode("utf-8", "surrogateescape")  # as state.decode_key
            ordinal = pop(key, None)
            if ordinal is None:
                gone.append(key)
            elif ordinal[0] != mtime or ordinal[1] != size:
                changed.append(key)
        changed.extend(remaining)
        return ListingDiff(changed=changed, gone=gone)
