"""What a batch of watcher events means: change hints, and the folders the doorbell missed.

Events are hints, never facts: each batch is classified in a worker thread (``stat`` can
block on network file systems) into file keys, folder keys (a folder created or moved in:
list just it) and "rescan" (a name could not be decoded at the root). The consumer
re-checks every key against the file system. With git rules on, a changed rules file
hints what its rules cover: a nested ``.gitignore`` its folder, the root's ``.gitignore``
or ``.git/info/exclude`` a full pass.

The same batch tells the doorbell (:mod:`~cocod.runtime.watch_doorbell`) what it missed:
:func:`rewatch` adds the folders it shows were left out, so their next change rings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cocod.executors.local_file import LocalFileReader
from cocod.runtime.watch_doorbell import Doorbell

LOSSY = "\ufffd"
"""What a lossy watcher puts in place of bytes of a file name that are not valid UTF-8."""


@dataclass
class ChangeHints:
    """One batch of hints: file keys, folder keys to list, or a full rescan."""

    keys: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    rescan: bool = False
    """The watch was (re)established or lost track: whatever happened was not seen."""
    full_pass: bool = False
    """The rules of the whole source changed (the root's ``.gitignore``): list it all."""

    def __bool__(self) -> bool:
        return bool(self.keys or self.dirs or self.rescan or self.full_pass)


HintSink = Callable[[ChangeHints], None]


def classify_changes(
    reader: LocalFileReader, root: str, changes: Iterable[tuple[int, str]]
) -> ChangeHints:
    """File keys, folder keys and rescan needs for one batch of events (blocking: stats)."""
    hints = ChangeHints()
    for _, path in changes:
        if LOSSY in path and not os.path.lexists(path):
            # A name that is not valid UTF-8 arrives with U+FFFD in it and names nothing:
            # list its folder, where the real file will be found under its real name.
            parent = os.path.dirname(path)
            parent_key = reader.key_of(parent)
            if parent_key is None:
                hints.rescan = hints.rescan or os.path.abspath(parent) == root
            elif not reader.is_excluded_dir(parent_key):
                hints.dirs.add(parent_key)
            continue
        key = reader.key_of(path)
        if key is None:
            continue
        scope = reader.ignore_scope_of(key)
        if scope == "":
            hints.full_pass = True
        elif scope is not None:
            hints.dirs.add(scope)  # a nested .gitignore: what is in its folder may change
        if os.path.isdir(path):
            if not reader.is_excluded_dir(key):
                hints.dirs.add(key)  # a folder created or moved in: list just it
        elif reader.is_candidate(key) or (
            not os.path.exists(path) and not reader.is_excluded_dir(key)
        ):
            hints.keys.add(key)  # a file, or something deleted (perhaps a folder)
    return hints


def rewatch(
    bell: Doorbell, reader: LocalFileReader, root: str, changes: Iterable[tuple[int, str]]
) -> None:
    """Add the folders a batch shows the doorbell missed (blocking: walks them).

    A change in a folder the doorbell does not watch (one its rules skipped, or one the
    reader thread has not reached yet) and the folder of a changed ``.gitignore`` (its
    rules may now keep folders they skipped) are added with what is under them; excluded
    folders stay out. Re-adding a watched folder costs no watch, only its listing.
    """
    tops: set[str] = set()
    seen: set[str] = set()
    for _, path in changes:
        key = reader.key_of(path)
        scope = None if key is None else reader.ignore_scope_of(key)
        if scope is not None:
            tops.add(os.path.join(root, scope) if scope else root)
        folder = os.path.dirname(path)
        if folder in seen:
            continue
        seen.add(folder)
        top = None
        while folder.startswith(root + os.sep) and not bell.is_watching(folder):
            top, folder = folder, os.path.dirname(folder)  # climb to the highest missed
        if top is not None and bell.should_watch(top):
            tops.add(top)
    for top in tops:
        above = os.path.dirname(top)
        while above.startswith(root) and above not in tops and len(above) > len(root):
            above = os.path.dirname(above)
        if above not in tops:  # not under another top, whose walk covers it
            bell.add_tree(top)
