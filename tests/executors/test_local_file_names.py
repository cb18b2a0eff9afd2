"""Any file name is a row: listing, watcher paths and reading agree on the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cocod.errors import RowError
from cocod.executors.file_names import display_name, has_undecodable_bytes, key_parts
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile

NAMES: list[bytes] = [
    b"caf\xe9.md",  # Latin-1, not valid UTF-8
    b"new\nline.md",
    b"tab\there.md",
    b"back\\slash.md",
    "emoji \N{GRINNING FACE}.md".encode(),
    b"x" * 252 + b".md",  # 255 bytes, the longest name Linux allows
    b"sub/\xff\xfe/inner.md",  # an undecodable folder name too
]


def _make(root: Path, names: list[bytes]) -> None:
    broot = os.fsencode(root)
    for name in names:
        path = os.path.join(broot, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"content of " + display_name(os.fsdecode(name)).encode())


def test_display_name() -> None:
    assert display_name("café.md") == "café.md"
    assert display_name("plain/a.md") == "plain/a.md"
    key = os.fsdecode(b"caf\xe9.md")
    assert has_undecodable_bytes(key) and display_name(key) == "caf\\xe9.md"
    # A backslash is doubled only in names that need escaping, so escapes stay unambiguous.
    assert display_name(os.fsdecode(b"a\\b\xff")) == "a\\\\b\\xff"
    assert display_name("a\\b") == "a\\b"
    for key in (os.fsdecode(n) for n in NAMES):
        display_name(key).encode("utf-8")  # always valid UTF-8 (Postgres text, logs)


def test_key_parts_refuse_paths_out_of_the_root() -> None:
    assert key_parts("a/b.md") == ["a", "b.md"]
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../x", "a//b", "./a"):
        assert key_parts(bad) is None


def test_any_name_is_listed_and_read_with_one_key(tmp_path: Path) -> None:
    _make(tmp_path, [*NAMES, b"plain.md"])
    reader = LocalFileReader(LocalFile(path=str(tmp_path)))
    listed = reader.list_rows_sync()
    expected = {os.fsdecode(n) for n in [*NAMES, b"plain.md"]}
    assert set(listed) == expected
    for name in [*NAMES, b"plain.md"]:
        key = os.fsdecode(name)
        # The watcher's path, as str or bytes, gives the listing's key.
        assert reader.key_of(os.path.join(str(tmp_path), key)) == key
        assert reader.key_of(os.path.join(os.fsencode(tmp_path), name)) == key
        row = reader.read_row_sync(key)
        assert row is not None
        assert row.value["filename"] == display_name(key)
        assert row.value["content"] == "content of " + display_name(key)
        assert row.ordinal is None or row.ordinal == listed[key]
    assert reader.read_row_sync("plain.md").value["filename"] == "plain.md"  # type: ignore[union-attr]


def test_names_match_patterns(tmp_path: Path) -> None:
    _make(tmp_path, [*NAMES, b"skip.txt"])
    reader = LocalFileReader(LocalFile(path=str(tmp_path), included_patterns=["**/*.md"]))
    assert set(reader.list_rows_sync()) == {os.fsdecode(n) for n in NAMES}
    assert reader.is_candidate(os.fsdecode(b"new\nline.md"))


def test_unreadable_name_is_a_row_error_with_the_escaped_name(tmp_path: Path) -> None:
    _make(tmp_path, [b"ok.md", b"caf\xe9.bin"])
    (tmp_path / "ok.md").write_text("fine")
    reader = LocalFileReader(LocalFile(path=str(tmp_path)))
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.bin"), "wb") as f:
        f.write(b"\xff\xfe\x00broken")
    with pytest.raises(RowError) as e:
        reader.read_row_sync(os.fsdecode(b"caf\xe9.bin"))
    assert "'caf\\\\xe9.bin'" in str(e.value)  # the repr of the display name
    str(e.value).encode("utf-8")  # the message itself is printable
    assert reader.read_row_sync("ok.md") is not None
    # A name too long for the OS is that key's error, not the listing's or the pass's.
    with pytest.raises(RowError) as too_long:
        reader.read_row_sync("y" * 300)
    assert "cannot read file" in str(too_long.value)
