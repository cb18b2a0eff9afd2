"""Fingerprints never change across versions: they are stored.

Why: tracking rows keep each target row's value fingerprint and each memo entry is keyed
by a fingerprint of the function's inputs; if an optimisation of ``Fingerprinter`` changed
a digest, the next pass after an upgrade would rewrite every target row and recompute
every embedding.  The digests below were computed by the implementation before its fast
paths (exact-type dispatch) were added; subclasses and mixed containers take the other
paths.
"""

from __future__ import annotations

import collections
import datetime
import enum
import uuid
from typing import Any

import numpy as np
import pytest

from cocod.engine.fingerprint import Fingerprinter, fingerprint


class Level(enum.IntEnum):
    A = 3


class Name(str):
    pass


CASES: list[tuple[Any, str]] = [
    (None, "738096e476d3c5447c3cb95c39bfc964"),
    ("", "3299dc3d5be4287be154be13ee163ecd"),
    ("text", "cd85154784d5f101f6202d4a709facd5"),
    ("caf\u00e9 \ud800", "955722ba6bc2d6879044ffeb82e827d5"),
    (True, "0583525866ce6d4c711b8d319b34a247"),
    (False, "3662d6121c293c1c21dc4d3401650d44"),
    (0, "43ab5577939c4026eb57f9a33c388061"),
    (-5, "651abc3cd4f451f5b61df93a1a4d52e1"),
    (2**70, "13834e9eb05bf24da441c697fd50166c"),
    (1.5, "b467d1fddd9735d37332190ff89c00f9"),
    (float("nan"), "58e928e5d3c7e6fb42369352d17ef304"),
    (b"", "8e93b0f4c91ab797943fd990c8b04b44"),
    (b"\x00ab", "8695e9a8b6ca508d11d6c3e65dab0a22"),
    (bytearray(b"xy"), "91a46fe7479c154182bf759be0642196"),
    (np.arange(8, dtype=np.float32), "1d73f4c7946282812c12baa248257521"),
    (np.zeros((2, 3), dtype=np.float64), "bbe02825d677d8b6bd40e99411531b1f"),
    (np.arange(6, dtype=np.int64)[::2], "d25f4347ed68f93745c9a2eb6a713923"),
    (np.float32(1.25), "f6ce654aa12f86bb68c5d69d7c05c758"),
    (np.int64(7), "a839074902a08a481430ac4c7b413ab6"),
    ({"a": 1, "b": [1, 2]}, "fbc0ec851ec03f9793e5f8c19dd7a416"),
    (collections.OrderedDict(z=1), "90be5a3e6c932a8fca2769b599fd2d60"),
    ([1, "2", None], "39f5751df3a2a64c24eb521e8a478876"),
    ((1, 2), "0d040f1e3cd033c68544c938ac24901f"),
    ([(1, 2), [3]], "63fc46599c032c8e4bd72314c8414b35"),
    (uuid.UUID(int=5), "c6b35a853d852ebeaf6fdb883c56c3ac"),
    (datetime.date(2020, 1, 2), "85ada62d0c78102dec4931f8358b89d8"),
    (datetime.datetime(2020, 1, 2, 3, 4, 5), "7fa2f40a8f46146183a05a1a49fec3f9"),
    (datetime.time(1, 2), "9dd2c1201a386f9121023994b12f772a"),
    (datetime.timedelta(seconds=3.5), "319f33c7f6f1d9ee4e7c02a9db261993"),
    (Level.A, "2383bc0567f0820023ace9d58f09b30a"),
    (Name("sub"), "310b5b11305e51ca76370f252b665732"),
    ({"k": (np.arange(3, dtype=np.float32), "x")}, "78882e40e7971b0f399116fff35239e2"),
    (frozenset(), "80edef8cbf5c6d289f39831ebe7fd7f1"),
]


@pytest.mark.parametrize(("value", "digest"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_digest_is_the_stored_one(value: Any, digest: str) -> None:
    assert fingerprint(value).hex() == digest


def test_a_sequence_of_values_and_a_shared_prefix() -> None:
    values = [v for v, _ in CASES]
    assert fingerprint(*values).hex() == "e740ec44f83055581fb9b94fc07be6b9"
    prefix = Fingerprinter().add("identity")
    assert prefix.copy().add("x").digest() == fingerprint("identity", "x")
