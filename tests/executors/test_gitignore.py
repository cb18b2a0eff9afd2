"""LocalFile(respect_gitignore=True): git's ignore rules on real trees, checked against git.

Every test runs with HOME and XDG_CONFIG_HOME in tmp_path and no system config, so the
machine's own git configuration cannot change what is ignored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cocod.executors.gitignore import GitIgnore, compile_rules, core_excludes_file
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile
from tests.conftest import write


@pytest.fixture(autouse=True)
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    return home


def make_repo(root: Path) -> Path:
    """A working tree with the usual suspects; what git would track is listed in TRACKED."""
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / ".git" / "config", "[core]\n\tbare = false\n")
    write(root / ".git" / "objects" / "ab" / "cdef", "blob")
    write(root / ".git" / "info" / "exclude", "# local only\nsecret.txt\n")
    write(root / ".gitignore", "build/\n*.log\n")
    write(root / "README.md", "# readme\n")
    write(root / "src" / "main.py", "print('hi')\n")
    write(root / "src" / "debug.log", "noise\n")
    write(root / "src" / "secret.txt", "local\n")
    write(root / "build" / "out.py", "generated = 1\n")
    write(root / "build" / "deep" / "more.py", "generated = 2\n")
    write(root / "docs" / ".gitignore", "draft*.md\n!draft-keep.md\n/local/\n")
    write(root / "docs" / "guide.md", "# guide\n")
    write(root / "docs" / "draft1.md", "wip\n")
    write(root / "docs" / "draft-keep.md", "kept\n")
    write(root / "docs" / "local" / "notes.md", "mine\n")
    write(root / "docs" / "sub" / "local" / "tracked.md", "anchored rules stay local\n")
    write(root / "node_modules" / ".gitignore", "*\n")
    write(root / "node_modules" / "x" / "index.js", "module.exports = 1\n")
    return root


TRACKED = [
    ".gitignore",
    "README.md",
    "docs/.gitignore",
    "docs/draft-keep.md",
    "docs/guide.md",
    "docs/sub/local/tracked.md",
    "src/main.py",
]


def _reader(root: Path, **kw: object) -> LocalFileReader:
    return LocalFileReader(LocalFile(path=str(root), respect_gitignore=True, **kw))  # type: ignore[arg-type]


def _all_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def test_only_what_git_would_track_is_listed(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    reader = _reader(root)
    assert sorted(reader.list_rows_sync()) == TRACKED
    # The hint path (a watcher's key) agrees with the listing for every file on disk.
    candidates = [k for k in _all_files(root) if reader.is_candidate(k)]
    assert candidates == TRACKED
    ignored_dirs = ("build", "build/deep", ".git", ".git/objects", "docs/local", "node_modules/x")
    for key in ignored_dirs:
        assert reader.is_excluded_dir(key), key
    for key in ("src", "docs", "docs/sub", "docs/sub/local"):
        assert not reader.is_excluded_dir(key), key
    assert reader.read_row_sync("build/out.py") is None
    assert reader.read_row_sync("src/debug.log") is None
    row = reader.read_row_sync("src/main.py")
    assert row is not None and row.value["content"] == "print('hi')\n"


def test_off_by_default(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    reader = LocalFileReader(LocalFile(path=str(root)))
    assert sorted(reader.list_rows_sync()) == _all_files(root)


def test_ignored_folders_are_never_opened(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    reader = _reader(root)
    reader.list_rows_sync()
    # root, src, docs, docs/sub, docs/sub/local and node_modules (to read its .gitignore,
    # as git does; its * then ignores x/): not .git, build, docs/local.
    assert reader.folders_scanned == 6


@pytest.mark.skipif(shutil.which("git") is None, reason="git is the oracle here")
def test_agrees_with_git_check_ignore(tmp_path: Path, git_env: Path) -> None:
    """The same tree and rules, asked of git itself: ``git ls-files --others``."""
    root = make_repo(tmp_path / "repo")
    shutil.rmtree(root / ".git")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(git_env)}
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    write(root / ".git" / "info" / "exclude", "secret.txt\n")
    write(git_env / ".config" / "git" / "ignore", "*.swp\n")
    write(root / "src" / ".main.py.swp", "swap")
    write(root / "a" / "b" / "c.txt", "deep")
    write(root / "a" / ".gitignore", "b/*.txt\n!b/keep.txt\n")
    write(root / "a" / "b" / "keep.txt", "kept")
    git = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert sorted(_reader(root).list_rows_sync()) == sorted(git.stdout.split())


def test_global_excludes_default_and_core_excludes_file(tmp_path: Path, git_env: Path) -> None:
    root = make_repo(tmp_path / "repo")
    write(root / "src" / "main.py.swp", "swap")
    write(root / "src" / "notes.bak", "bak")
    write(git_env / ".config" / "git" / "ignore", "*.swp\n")
    assert "src/main.py.swp" not in _reader(root).list_rows_sync()
    assert "src/notes.bak" in _reader(root).list_rows_sync()
    # core.excludesFile replaces the default file; ~ is the user's home.
    write(git_env / "my-ignores", "*.bak\n")
    write(git_env / ".gitconfig", '[user]\n\tname = x\n[Core]\n\texcludesFile = "~/my-ignores"\n')
    rows = _reader(root).list_rows_sync()
    assert "src/notes.bak" not in rows and "src/main.py.swp" in rows
    # The repository's own config wins over the user's.
    write(root / ".git" / "config", "[core]\n  excludesfile = \n")
    rows = _reader(root).list_rows_sync()
    assert "src/notes.bak" in rows and "src/main.py.swp" in rows


def test_root_inside_a_working_tree_gets_the_outer_rules(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo / "docs" / "sub" / "x.log", "log")
    write(repo / "docs" / "sub" / "draft2.md", "wip")
    write(repo / "docs" / "sub" / "secret.txt", "excluded by info/exclude")
    reader = _reader(repo / "docs")
    assert sorted(reader.list_rows_sync()) == [
        ".gitignore",
        "draft-keep.md",
        "guide.md",
        "sub/local/tracked.md",
    ]
    assert not reader.is_candidate("sub/x.log")
    assert reader.is_excluded_dir("local")


def test_a_root_its_repository_ignores_keeps_its_own_rules(tmp_path: Path) -> None:
    """A home folder kept in a dotfiles repository whose .gitignore is '*'."""
    home = tmp_path / "dotfiles"
    write(home / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(home / ".gitignore", "*\n")
    write(home / "notes" / "a.md", "a")
    write(home / "notes" / "b.log", "b")
    write(home / "notes" / ".gitignore", "*.log\n")
    assert sorted(_reader(home / "notes").list_rows_sync()) == [".gitignore", "a.md"]


def test_editing_a_gitignore_changes_the_next_listing(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    reader = _reader(root)
    assert "build/out.py" not in reader.list_rows_sync()
    (root / ".gitignore").write_text("*.log\n")
    rows = reader.list_rows_sync()
    assert {"build/out.py", "build/deep/more.py"} <= set(rows)
    assert reader.is_candidate("build/out.py")
    (root / ".gitignore").write_text("build/\n*.log\n")
    assert "build/out.py" not in reader.list_rows_sync()
    assert not reader.is_candidate("build/out.py")
    # A nested file, through the partial listing a watcher's folder hint runs.
    (root / "docs" / ".gitignore").write_text("")
    assert sorted(reader.list_rows_sync(start="docs")) == [
        "docs/.gitignore",
        "docs/draft-keep.md",
        "docs/draft1.md",
        "docs/guide.md",
        "docs/local/notes.md",
        "docs/sub/local/tracked.md",
    ]
    assert reader.list_rows_sync(start="build") == {}


def test_which_changes_re_evaluate_which_folder(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    reader = _reader(root)
    assert reader.ignore_scope_of(".gitignore") == ""
    assert reader.ignore_scope_of("docs/.gitignore") == "docs"
    assert reader.ignore_scope_of(".git/info/exclude") == ""
    assert reader.ignore_scope_of("docs/guide.md") is None
    assert reader.ignore_scope_of("../.gitignore") is None
    assert LocalFileReader(LocalFile(path=str(root))).ignore_scope_of(".gitignore") is None
    # Inside a working tree, .git is not under the root: its files are not ours to watch.
    assert _reader(root / "docs").ignore_scope_of(".git/info/exclude") is None


def test_rules_semantics() -> None:
    rules = compile_rules("# c\n\n*.log\n!keep.log\nbuild/\n/top.txt\nfoo\\ \n", "", "t")
    assert rules is not None
    assert rules.decide("a/x.log") is True
    assert rules.decide("a/keep.log") is False
    assert rules.decide("build/") is True and rules.decide("build") is None
    assert rules.decide("top.txt") is True and rules.decide("a/top.txt") is None
    assert rules.decide("foo ") is True and rules.decide("foo") is None
    assert compile_rules("# only a comment\n\n", "", "t") is None
    nested = compile_rules("*.md\n", "docs/", "t")
    assert nested is not None and nested.decide("docs/a.md") and nested.decide("a.md") is None


def test_git_config_syntax() -> None:
    assert core_excludes_file("[core]\nexcludesFile = ~/x # comment\n") == "~/x"
    assert core_excludes_file('[CORE]\n\texcludesfile = "a b;c" ; c\n') == "a b;c"
    assert core_excludes_file('[core "sub"]\nexcludesfile = no\n') is None
    assert core_excludes_file("[core] excludesfile = inline\n[user]\nexcludesfile = no\n") == (
        "inline"
    )
    assert core_excludes_file("[core]\nexcludesfile=one\nexcludesfile=two\n") == "two"
    assert core_excludes_file("[core]\nexcludesfile = a\\\\b\\tc\n") == "a\\b\tc"


def test_a_big_ignored_folder_costs_nothing_to_list(tmp_path: Path) -> None:
    """10,000 files in an ignored folder: never opened (the timings are printed, not
    asserted; compare them in the same run)."""
    root = make_repo(tmp_path / "repo")
    for d in range(100):
        folder = root / "build" / f"d{d:03}"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f:03}.py").write_text("x")
    timings = {}
    for label, spec in (
        ("ignored", LocalFile(path=str(root), respect_gitignore=True)),
        ("listed", LocalFile(path=str(root))),
    ):
        reader = LocalFileReader(spec)
        start = time.perf_counter()
        rows = reader.list_rows_sync()
        timings[label] = (time.perf_counter() - start, len(rows), reader.folders_scanned)
    print(f"\nlisting with 10,000 ignored files: {timings}")
    assert timings["ignored"][1] == len(TRACKED) and timings["ignored"][2] == 6
    assert timings["listed"][1] > 10_000 and timings["listed"][2] > 100


def test_gitignore_module_reads_no_git_binary(tmp_path: Path) -> None:
    """The rules come from files: with PATH emptied, the same answer."""
    root = make_repo(tmp_path / "repo")
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        ignore = GitIgnore(root)
        assert ignore.is_dir_ignored("build") and not ignore.is_file_ignored("src/main.py")
    finally:
        os.environ["PATH"] = saved


def test_follow_symlinks_walk_applies_the_same_rules(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    os.symlink("src", root / "zsrc")  # a second path to src/: listed once, as src/
    reader = _reader(root, follow_symlinks=True)
    assert sorted(reader.list_rows_sync()) == TRACKED
    assert reader.folders_scanned == 6
    assert sorted(reader.list_rows_sync(start="docs")) == [
        k for k in TRACKED if k.startswith("docs/")
    ]


def test_a_linked_worktree_uses_the_main_repositorys_exclude(tmp_path: Path) -> None:
    main = make_repo(tmp_path / "main")
    worktree_git = main / ".git" / "worktrees" / "wt"
    write(worktree_git / "commondir", "../..\n")
    wt = tmp_path / "wt"
    write(wt / ".git", f"gitdir: {worktree_git}\n")
    write(wt / "secret.txt", "excluded by the main repository's info/exclude")
    write(wt / "kept.md", "kept")
    reader = _reader(wt)
    assert sorted(reader.list_rows_sync()) == ["kept.md"]  # nor the .git file


def test_a_symlinked_gitignore_is_not_read(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    write(tmp_path / "elsewhere" / "rules", "*.md\n")
    os.symlink(tmp_path / "elsewhere" / "rules", root / "src" / ".gitignore")
    write(root / "src" / "doc.md", "doc")
    assert "src/doc.md" in _reader(root).list_rows_sync()


def test_a_deleted_file_a_folder_rule_does_not_cover_still_reaches_the_engine(
    tmp_path: Path,
) -> None:
    """The watcher asks is_excluded_dir of deleted paths, whose kind it cannot know."""
    root = make_repo(tmp_path / "repo")
    write(root / ".gitignore", "build/\nout/\n")
    write(root / "out", "a file named like the ignored folder")
    reader = _reader(root)
    assert "out" in reader.list_rows_sync()
    assert not reader.is_excluded_dir("out")  # a file now: its deletion must be seen
    (root / "out").unlink()
    assert not reader.is_excluded_dir("out")  # gone: it may have been that file
    (root / "out").mkdir()
    assert reader.is_excluded_dir("out")  # a folder: pruned
    assert reader.is_excluded_dir("build/gone.o")
