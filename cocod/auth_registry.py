"""v0's auth registry: secrets registered once, referenced from specs by key.

A spec that needs a credential (``EmbedText(api_key=...)``, ``LlmSpec(api_key=...)``)
holds a reference, not the secret, so the secret never enters the spec's JSON, its
fingerprint, the setup record or a log line. The executor looks the reference up when it
runs (:func:`resolve`), so an entry may be added after the flow is defined.

A transient entry's key is a salted hash of its value (as in v0): adding the same secret
twice gives the same reference, and a changed secret gives a new key, which changes the
spec's fingerprint only when the secret itself changed.

The registry is per process and thread-safe. Unlike v0, adding the same key again with an
equal value is allowed (a module imported twice, a test rerun); only a different value under
an existing key is an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cocod.errors import SettingsError
from cocod.flow.specs import spec_to_json

T = TypeVar("T")

_lock = threading.Lock()
_entries: dict[str, Any] = {}


@dataclass
class TransientAuthEntryReference(Generic[T]):
    """A reference to an auth entry; its key may be derived from the value."""

    key: str


class AuthEntryReference(TransientAuthEntryReference[T]):
    """A reference to an auth entry whose key is stable (chosen by the user)."""


def _transient_key(value: Any) -> str:
    try:
        text = json.dumps(spec_to_json(value), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    digest = hashlib.blake2b(text.encode(), digest_size=16, person=b"cocod_auth").digest()
    return "__transient_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def add_transient_auth_entry(value: T) -> TransientAuthEntryReference[T]:
    """Register ``value`` under a key derived from it; returns the reference."""
    key = _transient_key(value)
    with _lock:
        _entries.setdefault(key, value)
    return TransientAuthEntryReference(key)


def add_auth_entry(key: str, value: T) -> AuthEntryReference[T]:
    """Register ``value`` under ``key``; returns the reference."""
    with _lock:
        if key in _entries and _entries[key] != value:
            raise SettingsError(
                f"auth entry {key!r} already exists with another value; use a new key, or "
                "ref_auth_entry(key) to refer to the existing one"
            )
        _entries[key] = value
    return AuthEntryReference(key)


def ref_auth_entry(key: str) -> AuthEntryReference[T]:
    """A reference to an entry added (now or later) with ``add_auth_entry(key, ...)``."""
    return AuthEntryReference(key)


def get_auth_entry(cls: type[T], ref: TransientAuthEntryReference[T]) -> T:
    """The value behind ``ref``; a SettingsError says which key is missing."""
    del cls  # values are kept as the Python objects that were registered
    with _lock:
        if ref.key in _entries:
            return _entries[ref.key]  # type: ignore[no-any-return]
    raise SettingsError(
        f"auth entry {ref.key!r} is not registered in this process; call "
        f"cocod.auth_registry.add_auth_entry({ref.key!r}, value) before the flow runs "
        "(in the app module, so the CLI and the daemon run it too)"
    )


def resolve(value: Any) -> Any:
    """A spec field that may be a reference: the registered value, else ``value`` itself."""
    if isinstance(value, TransientAuthEntryReference):
        return get_auth_entry(object, value)
    return value


__all__ = [
    "AuthEntryReference",
    "TransientAuthEntryReference",
    "add_auth_entry",
    "add_transient_auth_entry",
    "get_auth_entry",
    "ref_auth_entry",
    "resolve",
]
