"""The fair share a cluster member takes: ceil(instances × weight / total weight)."""

from __future__ import annotations

import pytest

from cocod.daemon.cluster import fair_share


@pytest.mark.parametrize(
    ("instances", "weight", "total", "share"),
    [
        (6, 1, 3, 2),
        (6, 1, 4, 2),  # ceil: the shares of all live daemons cover every instance
        (7, 1, 3, 3),
        (6, 2, 4, 3),  # a weight-2 daemon beside two weight-1 ones takes half
        (6, 1, 1, 6),  # alone: everything
        (0, 1, 3, 0),
        (5, 3, 0, 5),  # not counted yet (no heartbeat read): at least its own weight
    ],
)
def test_fair_share(instances: int, weight: int, total: int, share: int) -> None:
    assert fair_share(instances, weight, total) == share


def test_shares_cover_every_instance() -> None:
    for instances in range(0, 30):
        for weights in ([1, 1, 1], [1, 2, 3], [5, 1], [1, 1, 1, 1]):
            total = sum(weights)
            assert sum(fair_share(instances, w, total) for w in weights) >= instances
