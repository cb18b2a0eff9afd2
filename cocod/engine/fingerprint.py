"""16-byte BLAKE2b fingerprints of canonical value encodings.

Every value the engine fingerprints (file contents, function inputs, collected rows, flow
logic) goes through :class:`Fingerprinter`, which tags each value with its type so that
``"1"`` and ``1``, or ``[1, 2]`` and ``(1, 2)`` in different positions, never collide.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

DIGEST_SIZE = 16


class Fingerprinter:
    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=DIGEST_SIZE)

    def add(self, value: Any) -> Fingerprinter:
        # The common exact types first, by one dict look-up (a str, an int, a tuple of
        # ints, an embedding: several per chunk); anything else, subclasses included,
        # takes the ordered isinstance chain, which defines the encoding.
        fast = _FAST.get(type(value))
        if fast is not None:
            fast(self, value)
        else:
            self._add_any(value)
        return self

    def _add_any(self, value: Any) -> None:
        update = self._h.update
        if value is None:
            update(b"N")
        elif isinstance(value, str):
            _add_str(self, value)
        elif isinstance(value, bool):
            update(b"T" if value else b"F")
        elif isinstance(value, int):
            update(b"i" + str(value).encode() + b";")
        elif isinstance(value, float):
            update(b"f" + struct.pack("<d", value))
        elif isinstance(value, bytes | bytearray | memoryview):
            update(b"b" + len(value).to_bytes(8, "little"))
            update(value)
        elif isinstance(value, np.ndarray):
            _add_array(self, value)
        elif isinstance(value, Mapping):
            update(b"{" + len(value).to_bytes(8, "little"))
            for k, v in value.items():
                self.add(k)
                self.add(v)
        elif isinstance(value, list | tuple):
            _add_sequence(self, value)
        elif isinstance(value, np.generic):
            self.add(value.item())
        elif isinstance(value, uuid.UUID):
            update(b"u" + value.bytes)
        elif isinstance(value, datetime.date | datetime.time | datetime.datetime):
            self.add(f"{type(value).__name__}:{value.isoformat()}")
        elif isinstance(value, datetime.timedelta):
            self.add(f"td:{value.total_seconds()!r}")
        else:
            self.add(json.dumps(value, sort_keys=True, default=repr))

    def digest(self) -> bytes:
        return self._h.digest()

    def copy(self) -> Fingerprinter:
        """A fingerprinter that has seen what this one has: a common prefix (a function's
        identity before each call's inputs) is hashed once, not per call."""
        other = Fingerprinter.__new__(Fingerprinter)
        other._h = self._h.copy()
        return other


def _add_str(fp: Fingerprinter, value: str) -> None:
    data = value.encode("utf-8", "surrogatepass")
    fp._h.update(b"s" + len(data).to_bytes(8, "little") + data)


def _add_int(fp: Fingerprinter, value: int) -> None:
    fp._h.update(b"i%d;" % value)


_DTYPE_TAGS: dict[Any, bytes] = {}


def _add_array(fp: Fingerprinter, value: Any) -> None:
    arr = np.ascontiguousarray(value)
    tag = _DTYPE_TAGS.get(arr.dtype)
    if tag is None:
        tag = _DTYPE_TAGS[arr.dtype] = b"a" + arr.dtype.str.encode()
    header = tag + len(arr.shape).to_bytes(1, "little")
    header += b"".join(dim.to_bytes(8, "little") for dim in arr.shape)
    fp._h.update(header)
    fp._h.update(arr.tobytes())


def _add_sequence(fp: Fingerprinter, value: list[Any] | tuple[Any, ...]) -> None:
    fp._h.update(b"[" + len(value).to_bytes(8, "little"))
    for v in value:
        fast = _FAST.get(type(v))
        if fast is not None:
            fast(fp, v)
        else:
            fp._add_any(v)


def _add_none(fp: Fingerprinter, _value: None) -> None:
    fp._h.update(b"N")


def _add_dict(fp: Fingerprinter, value: dict[Any, Any]) -> None:
    fp._h.update(b"{" + len(value).to_bytes(8, "little"))
    for k, v in value.items():
        fp.add(k)
        fp.add(v)


_FAST: dict[type, Any] = {
    str: _add_str,
    int: _add_int,
    tuple: _add_sequence,
    list: _add_sequence,
    dict: _add_dict,
    np.ndarray: _add_array,
    type(None): _add_none,
}
"""Exact types with the same encoding as :meth:`Fingerprinter._add_any`, without its
chain of isinstance checks."""


def fingerprint(*values: Any) -> bytes:
    fp = Fingerprinter()
    for v in values:
        fp.add(v)
    return fp.digest()


def fingerprint_bytes(data: bytes) -> bytes:
    """Fast path for raw file contents."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()
