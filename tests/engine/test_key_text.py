"""Tracking rows keep primary keys as text: the fast path must write what json.dumps does.

Why: a key text that changed between versions (an escape written differently) would no
longer match the stored one, so the next pass would delete and re-insert every row.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np

from cocod.engine.values import key_from_json_text, key_to_json_text, to_json_value
from cocod.flow.types import ValueType, basic

TYPES = [basic("Str"), basic("Range"), basic("Int64")]


def general_text(values: list[Any], types: list[ValueType]) -> str:
    parts = [to_json_value(v, t) for v, t in zip(values, types, strict=True)]
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(parts, separators=(",", ":"))
    return text


def test_known_texts() -> None:
    assert key_to_json_text(["docs/a.md", (0, 12)], TYPES[:2]) == '["docs/a.md",[0,12]]'
    assert (
        key_to_json_text(['caf\u00e9 "q"\n', (1, 2), 7], TYPES)
        == '["caf\u00e9 \\"q\\"\\n",[1,2],7]'
    )
    # A lone surrogate (a file name that is not UTF-8) is escaped, and reads back.
    text = key_to_json_text(["x\udce9.md", (3, 4)], TYPES[:2])
    assert text == '["x\\udce9.md",[3,4]]'
    assert key_from_json_text(text, TYPES[:2]) == ["x\udce9.md", (3, 4)]


def test_random_keys_match_the_general_conversion() -> None:
    rng = random.Random(11)
    chars = ["a", "\u00e9", '"', "\\", "\n", "\x00", "\x1f", "\u2028", "\ud800", "\U0001f600", "/"]
    ranges: list[Any] = [(5, 9), (True, 3), (np.int64(4), 5), [1, 2], (0, 10**15)]
    ints: list[Any] = [0, -(2**70), True, np.int64(3)]
    for _ in range(3000):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 10)))
        values = [text, rng.choice(ranges), rng.choice(ints)]
        assert key_to_json_text(values, TYPES) == general_text(values, TYPES), values
