"""File names as LocalFile keys: any bytes in, the same key whichever way a file was found.

POSIX file names are bytes. A key is the path relative to the source root, '/'-separated,
decoded the way Python decodes every OS path (``os.fsdecode``: UTF-8 with
``surrogateescape``), so a name that is not valid UTF-8 (``b"caf\\xe9.md"``) is a ``str``
holding a lone surrogate (``"caf\\udce9.md"``) and encodes back to exactly its bytes with
``os.fsencode``. Scans (``os.scandir`` on a ``str`` path) and watcher paths give the same
key with no further work.

Such a ``str`` cannot go to Postgres ``text`` (nor be printed to a UTF-8 log), so what
users see, and what the row's ``filename`` field carries, is :func:`display_name`: the key
itself when it is valid UTF-8 (every ordinary name, unchanged, as v0 has it), otherwise
the name with each undecodable byte written ``\\xNN`` and each backslash doubled (so two
different undecodable names never look alike).
"""

from __future__ import annotations

import os

# os.fsdecode errors="surrogateescape" maps an undecodable byte 0xNN to U+DCNN.
_SURROGATE_LOW, _SURROGATE_HIGH = "\udc80", "\udcff"


def has_undecodable_bytes(key: str) -> bool:
    """Does this key come from a name that is not valid UTF-8?"""
    return any(_SURROGATE_LOW <= c <= _SURROGATE_HIGH for c in key)


def display_name(key: str) -> str:
    """A valid-UTF-8 spelling of a key, for the ``filename`` field, messages and logs.

    ``display_name("café.md") == "café.md"``;
    ``display_name(os.fsdecode(b"caf\\xe9.md")) == "caf\\\\xe9.md"`` (i.e. ``caf\\xe9.md``).
    """
    if not has_undecodable_bytes(key):
        return key
    out: list[str] = []
    for c in key:
        if _SURROGATE_LOW <= c <= _SURROGATE_HIGH:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\\\")
        elif "\ud800" <= c <= "\udfff":
            # Not from fsdecode (a caller built it); never let it reach UTF-8 output.
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def key_bytes(key: str) -> bytes:
    """The real bytes of a key's path (what ``open`` must be given)."""
    return os.fsencode(key)


def key_parts(key: str) -> list[str] | None:
    """The components of a key, or None if it could never be a listed key.

    Listed keys never have empty, '.' or '..' components, nor a leading '/': such a key
    (from an old tracking row, or a bad hint) must not reach outside the root.
    """
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in key:
        return None
    return parts
