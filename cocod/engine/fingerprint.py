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
        update = self._h.update
        if value is None:
            update(b"N")
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            update(b"s" + len(data).to_bytes(8, "little"))
            update(data)
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
            arr = np.ascontiguousarray(value)
            update(b"a" + arr.dtype.str.encode() + len(arr.shape).to_bytes(1, "little"))
            for dim in arr.shape:
                update(dim.to_bytes(8, "little"))
            update(arr.tobytes())
        elif isinstance(value, Mapping):
            update(b"{" + len(value).to_bytes(8, "little"))
            for k, v in value.items():
                self.add(k)
                self.add(v)
        elif isinstance(value, list | tuple):
            update(b"[" + len(value).to_bytes(8, "little"))
            for v in value:
                self.add(v)
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
        return self

    def digest(self) -> bytes:
        return self._h.digest()

    def copy(self) -> Fingerprinter:
        """A fingerprinter that has seen what this one has: a common prefix (a function's
        identity before each call's inputs) is hashed once, not per call."""
        other = Fingerprinter.__new__(Fingerprinter)
        other._h = self._h.copy()
        return other


def fingerprint(*values: Any) -> bytes:
    fp = Fingerprinter()
    for v in values:
        fp.add(v)
    return fp.digest()


def fingerprint_bytes(data: bytes) -> bytes:
    """Fast path for raw file contents."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()
