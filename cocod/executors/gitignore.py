"""Git's ignore rules for a LocalFile root (``LocalFile(respect_gitignore=True)``).

What is ignored, as git decides it (``gitignore(5)``), without running git:

* ``.gitignore`` files in the root and every folder under it, each relative to its folder;
  a deeper file overrides a shallower one; in one file the last matching line wins and
  ``!pattern`` re-includes;
* when the root lies inside a git working tree, the ``.gitignore`` files of the folders
  between the repository's top and the root, then ``$GIT_DIR/info/exclude``;
* the global excludes: ``core.excludesFile`` from git's config files (system, global, the
  repository's; the last one setting it wins), by default ``$XDG_CONFIG_HOME/git/ignore``
  (``~/.config/git/ignore``);
* ``.git`` itself (the folder, or the file a worktree or submodule has), at any depth.

Patterns are compiled by ``pathspec``'s gitwildmatch implementation (its
``GitIgnoreSpecPattern``). An ignored folder is never opened: as in git, a file under it
cannot be re-included, and listing cost does not depend on what is inside.

Two deliberate differences from git: a ``.gitignore`` that is a symlink is not read (git
does not follow it in the working tree either, but warns); and when the root folder
*itself* is ignored by the rules above it (a home-directory "dotfiles" repository whose
``.gitignore`` is ``*``), those outer rules are dropped and the root is treated as a
repository top of its own: the user asked for this folder to be indexed.

Rule files are re-read when their (mtime, size, inode) change, and always while they are
younger than the racy window (an edit in the same timestamp tick with the same size would
otherwise go unseen), so an edited ``.gitignore`` takes effect on the next listing.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

try:  # pathspec >= 1.0: the gitwildmatch semantics under their non-deprecated name
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern as _Pattern
except ImportError:  # pragma: no cover - pathspec 0.12
    from pathspec.patterns.gitwildmatch import GitWildMatchPattern as _Pattern

log = structlog.get_logger()

IGNORE_FILE = ".gitignore"
GIT_DIR = ".git"
MAX_RULES_FILE_SIZE = 1 << 20
"""A rules file is read up to 1 MiB (untrusted input has bounded cost); the rest is dropped."""
_RACY_WINDOW_NS = 2_000_000_000

Signature = tuple[int, int, int, int]
"""(st_ino, st_size, st_mtime_ns, st_ctime_ns) of a rules file: re-read when it changes."""


@dataclass(frozen=True)
class RulesFile:
    """The compiled lines of one rules file, matched against paths relative to ``base``.

    ``base`` is the file's folder relative to the repository top, with a trailing '/'
    ("" for the top). Paths of folders end with '/' (how gitwildmatch tells them apart).
    """

    source: str
    base: str
    lines: tuple[tuple[re.Pattern[str], bool], ...]
    """(regex, is_ignore) in file order; ``is_ignore`` is False for a ``!`` line."""
    ignores: re.Pattern[str] | None
    negations: re.Pattern[str] | None

    def decide(self, path: str) -> bool | None:
        """True: ignored; False: re-included by a ``!`` line; None: no line matches."""
        if not path.startswith(self.base):
            return None
        rel = path[len(self.base) :]
        ignored = self.ignores is not None and self.ignores.match(rel) is not None
        negated = self.negations is not None and self.negations.match(rel) is not None
        if ignored != negated:
            return ignored
        if not ignored:
            return None
        for regex, is_ignore in reversed(self.lines):  # both kinds match: the last one wins
            if regex.match(rel) is not None:
                return is_ignore
        return None  # pragma: no cover - one of the two regexes matched


def compile_rules(text: str, base: str, source: str) -> RulesFile | None:
    """Compile a rules file's text; None when it has no pattern. Bad lines are skipped,
    as git skips them."""
    lines: list[tuple[re.Pattern[str], bool]] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        try:
            pattern = _Pattern(line)
        except Exception as e:  # GitIgnorePatternError, re.error: git ignores such a line
            log.debug("source.gitignore_bad_line", file=source, line=line, error=str(e))
            continue
        if pattern.include is None or pattern.regex is None:
            continue  # a blank line or a comment
        # The directory-marker group is named in each regex; alternatives need it unnamed.
        regex = re.compile(pattern.regex.pattern.replace("(?P<ps_d>", "(?:"))
        lines.append((regex, bool(pattern.include)))
    if not lines:
        return None
    return RulesFile(
        source,
        base,
        tuple(lines),
        _union(r for r, ignore in lines if ignore),
        _union(r for r, ignore in lines if not ignore),
    )


def _union(regexes: Iterable[re.Pattern[str]]) -> re.Pattern[str] | None:
    parts = [f"(?:{r.pattern})" for r in regexes]
    return re.compile("|".join(parts)) if parts else None


@dataclass(frozen=True)
class IgnoreChain:
    """The rules that apply inside one folder, the most specific first.

    ``prefix`` is the source root relative to the repository top ("" or "a/b/"): a key
    plus it is the path the rules see. It travels with the chain, so a listing that runs
    while another thread re-discovers the repository stays consistent.
    """

    files: tuple[RulesFile, ...] = ()
    prefix: str = ""

    def with_file(self, rules: RulesFile | None) -> IgnoreChain:
        return self if rules is None else IgnoreChain((rules, *self.files), self.prefix)

    def is_ignored(self, path: str) -> bool:
        """``path`` is relative to the repository top (folders end with '/')."""
        for rules in self.files:
            decision = rules.decide(path)
            if decision is not None:
                return decision
        return False


@dataclass(frozen=True)
class Repository:
    """Where the source root sits in a git working tree (or is a top of its own)."""

    top: str
    git_dir: str | None
    """The repository's git directory (``.git``, or where a ``.git`` file points), or None."""


def find_repository(root: str) -> Repository:
    """The innermost working tree holding ``root`` (its folder with a ``.git``), else root."""
    current = os.path.abspath(root)
    while True:
        dot_git = os.path.join(current, GIT_DIR)
        try:
            st = os.stat(dot_git)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return Repository(current, dot_git)
        if st is not None and stat.S_ISREG(st.st_mode):
            return Repository(current, _linked_git_dir(current, dot_git))
        parent = os.path.dirname(current)
        if parent == current:
            return Repository(os.path.abspath(root), None)
        current = parent


def _linked_git_dir(top: str, dot_git_file: str) -> str | None:
    """A worktree's or submodule's ``.git`` file says ``gitdir: <path>``."""
    text = _read_text(dot_git_file, 4096)
    if text is None or not text.startswith("gitdir:"):
        return None
    path = text[len("gitdir:") :].strip()
    return os.path.normpath(os.path.join(top, path))


def _common_dir(git_dir: str) -> str:
    """A linked worktree shares ``info/exclude`` with its main repository (``commondir``)."""
    text = _read_text(os.path.join(git_dir, "commondir"), 4096)
    if text is None or not text.strip():
        return git_dir
    return os.path.normpath(os.path.join(git_dir, text.strip()))


def _read_text(path: str, limit: int) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        log.warning("source.gitignore_truncated", file=path, limit=limit)
        data = data[:limit]
    return data.decode("utf-8", errors="replace")


class GitIgnore:
    """One LocalFile root's ignore rules, with the rules files cached by signature.

    Keys are the LocalFile keys (relative to the root, '/'-separated). A listing builds
    chains folder by folder (:meth:`enter_dir`); a single key from a watcher hint gets its
    chain from the folders above it (:meth:`chain_for`).
    """

    def __init__(self, root: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> None:
        self.root = os.path.abspath(root)
        self._env = os.environ if env is None else env
        self._cache: dict[str, tuple[Signature, RulesFile | None]] = {}
        self._outer: IgnoreChain | None = None
        """The rules from outside the root; found on first use (I/O: never in __init__,
        which may run on an event loop), re-read by each full listing."""

    # -- the rules from outside the root ---------------------------------------------

    def refresh(self) -> None:
        """Re-discover the repository and re-read the rules above the root (each full
        listing calls this: cheap, a few stats)."""
        repo = find_repository(self.root)
        rel = os.path.relpath(self.root, repo.top)
        prefix = "" if rel == "." else Path(rel).as_posix() + "/"
        files: list[RulesFile] = []
        if prefix:  # the folders between the top and the root, deepest first
            parts = prefix.rstrip("/").split("/")
            for depth in range(len(parts) - 1, -1, -1):
                base = "".join(p + "/" for p in parts[:depth])
                path = os.path.join(repo.top, *parts[:depth], IGNORE_FILE)
                rules = self._load(path, base, in_tree=True)
                if rules is not None:
                    files.append(rules)
        common = _common_dir(repo.git_dir) if repo.git_dir else None
        config_files = [os.path.join(common, "config")] if common else []
        for rules_path in (
            os.path.join(common, "info", "exclude") if common else None,
            global_excludes_file(self._env, config_files, repo.top),
        ):
            if rules_path is not None:
                rules = self._load(rules_path, "", in_tree=False)
                if rules is not None:
                    files.append(rules)
        outer = IgnoreChain(tuple(files), prefix)
        if prefix and outer.is_ignored(prefix):
            log.info(
                "source.gitignore_root_ignored",
                root=self.root,
                repository=repo.top,
                detail="the root is ignored by its repository's rules; only rules inside it apply",
            )
            outer = IgnoreChain()
        self._outer = outer  # one assignment: readers in other threads see old or new

    def _load(self, path: str, base: str, *, in_tree: bool) -> RulesFile | None:
        """The compiled file, re-read only when its signature changed (or it is racy).

        ``in_tree`` files are not followed when they are symlinks; the global and
        ``info/exclude`` files are (people keep their dotfiles as links).
        """
        try:
            st = os.lstat(path) if in_tree else os.stat(path)
        except OSError:
            self._cache.pop(path, None)
            return None
        if not stat.S_ISREG(st.st_mode):
            self._cache.pop(path, None)
            return None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(path)
        is_racy = time.time_ns() - st.st_mtime_ns < _RACY_WINDOW_NS
        if cached is not None and cached[0] == sig and not is_racy:
            return cached[1]
        text = _read_text(path, MAX_RULES_FILE_SIZE)
        rules = None if text is None else compile_rules(text, base, path)
        self._cache[path] = (sig, rules)
        return rules

    # -- chains ------------------------------------------------------------------------

    def root_chain(self) -> IgnoreChain:
        """The rules from above the root: what a listing starts with."""
        outer = self._outer
        if outer is None:
            self.refresh()
            outer = self._outer
            assert outer is not None
        return outer

    def enter_dir(self, chain: IgnoreChain, dir_prefix: str, names: Iterable[str]) -> IgnoreChain:
        """The chain inside a folder a listing just scanned (``dir_prefix`` ends with '/'
        or is "" for the root), from its entries' names: no stat when it has no
        ``.gitignore``."""
        for name in names:
            if name == IGNORE_FILE:
                path = os.path.join(self.root, dir_prefix, IGNORE_FILE)
                return chain.with_file(self._load(path, chain.prefix + dir_prefix, in_tree=True))
        return chain

    def _chain_inside(self, chain: IgnoreChain, dir_prefix: str) -> IgnoreChain:
        path = os.path.join(self.root, dir_prefix, IGNORE_FILE)
        return chain.with_file(self._load(path, chain.prefix + dir_prefix, in_tree=True))

    def chain_for(self, dir_key: str) -> IgnoreChain | None:
        """The chain inside folder ``dir_key`` ("" for the root), or None when it or a folder
        above it is ignored (nothing under it is part of the source)."""
        chain = self._chain_inside(self.root_chain(), "")
        if not dir_key:
            return chain
        prefix = ""
        for part in dir_key.split("/"):
            prefix += part + "/"
            if self.is_ignored(chain, prefix[:-1], is_dir=True):
                return None
            chain = self._chain_inside(chain, prefix)
        return chain

    def is_ignored(self, chain: IgnoreChain, key: str, *, is_dir: bool) -> bool:
        """Is this entry (its parent folder's ``chain`` given) ignored?"""
        if key.rpartition("/")[2] == GIT_DIR:
            return True
        return chain.is_ignored(chain.prefix + key + ("/" if is_dir else ""))

    def is_dir_ignored(self, key: str) -> bool:
        parent = key.rpartition("/")[0]
        chain = self.chain_for(parent)
        return chain is None or self.is_ignored(chain, key, is_dir=True)

    def is_file_ignored(self, key: str) -> bool:
        parent = key.rpartition("/")[0]
        chain = self.chain_for(parent)
        return chain is None or self.is_ignored(chain, key, is_dir=False)

    # -- changes ------------------------------------------------------------------------

    def scope_of_change(self, key: str) -> str | None:
        """The folder whose listing a change to ``key`` may alter ("" for the whole
        source), or None when ``key`` is not a rules file of this root."""
        folder, _, name = key.rpartition("/")
        if name == IGNORE_FILE:
            return folder
        if not self.root_chain().prefix and key in (f"{GIT_DIR}/info/exclude", f"{GIT_DIR}/config"):
            return ""
        return None


# -- git config: where the global excludes file is ---------------------------------------


def git_config_files(env: Mapping[str, str], repo_configs: Iterable[str]) -> list[str]:
    """git's config files, lowest precedence first: system, global (XDG, then ~/.gitconfig,
    or ``$GIT_CONFIG_GLOBAL``), the repository's. Environment as git reads it."""
    files: list[str] = []
    if not env.get("GIT_CONFIG_NOSYSTEM"):
        files.append(env.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig")
    if env.get("GIT_CONFIG_GLOBAL"):
        files.append(env["GIT_CONFIG_GLOBAL"])
    else:
        files.append(os.path.join(_xdg_config_home(env), "git", "config"))
        home = env.get("HOME")
        if home:
            files.append(os.path.join(home, ".gitconfig"))
    files.extend(repo_configs)
    return files


def _xdg_config_home(env: Mapping[str, str]) -> str:
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        return xdg
    return os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")


def global_excludes_file(
    env: Mapping[str, str], repo_configs: Iterable[str], top: str
) -> str | None:
    """``core.excludesFile`` (the last config file that sets it wins; "" turns it off),
    else ``$XDG_CONFIG_HOME/git/ignore``. ``~/`` is expanded; a relative path is taken
    from the repository top, where git usually runs."""
    value: str | None = None
    for path in git_config_files(env, repo_configs):
        text = _read_text(path, MAX_RULES_FILE_SIZE) if os.path.isfile(path) else None
        if text is not None:
            found = core_excludes_file(text)
            if found is not None:
                value = found
    if value is None:
        return os.path.join(_xdg_config_home(env), "git", "ignore")
    if not value:
        return None
    if value == "~" or value.startswith("~/"):
        home = env.get("HOME") or os.path.expanduser("~")
        value = home + value[1:]
    return os.path.join(top, value)


_SECTION = re.compile(r'\s*\[\s*([A-Za-z0-9.-]+)\s*(?:"(?:[^"\\]|\\.)*"\s*)?\]')
_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", '"': '"', "\\": "\\"}


def core_excludes_file(text: str) -> str | None:
    """The last ``excludesFile`` of the ``[core]`` section in one git config file's text.

    Enough of git's syntax for this key: sections (case-insensitive, a subsection makes
    it another section), ``key = value`` with quotes, escapes and ``#``/``;`` comments.
    ``[include]`` files are not followed.
    """
    found: str | None = None
    in_core = False
    for raw in text.splitlines():
        line = raw
        header = _SECTION.match(line)
        if header is not None:
            name = header.group(1).lower()
            in_core = name == "core" and '"' not in header.group(0)
            line = line[header.end() :]
        key, sep, value = line.partition("=")
        if in_core and sep and key.strip().lower() == "excludesfile":
            found = _config_value(value)
    return found


def _config_value(raw: str) -> str:
    """A value as git reads it: quotes removed, escapes resolved, comments cut."""
    out: list[str] = []
    quoted = False
    i = 0
    pending_space = ""
    while i < len(raw):
        c = raw[i]
        i += 1
        if c == "\\" and i < len(raw):
            out.append(pending_space + _ESCAPES.get(raw[i], raw[i]))
            pending_space = ""
            i += 1
        elif c == '"':
            quoted = not quoted
        elif not quoted and c in "#;":
            break
        elif not quoted and c.isspace():
            if out:
                pending_space += c
        else:
            out.append(pending_space + c)
            pending_space = ""
    return "".join(out)
