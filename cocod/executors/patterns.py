"""LocalFile's include/exclude globs, with the semantics of CocoIndex v0 (Rust ``globset``).

v0 builds each pattern with ``globset::Glob::new`` (default options: ``literal_separator``
off, backslash escapes on, case sensitive, empty alternates dropped) and matches it against
the whole relative path. So, unlike a shell or gitignore:

==================  ===========================================================
``*`` / ``?``       match any characters, '/' included (``*.md`` matches ``a/b.md``)
``**/x``            ``x`` at any depth, the root included (``**/node_modules``)
``a/**/b``          zero or more folders between (``a/b``, ``a/x/y/b``)
``a/**``            everything under ``a`` (not ``a`` itself)
``**``              everything
``[ab]`` ``[a-z]``  one character of the class; ``[!ab]`` or ``[^ab]`` negates it; ``]``
                    first in the class is literal; no escapes or POSIX classes inside
``{a,b}``           either alternative (nesting allowed); ``{a}`` is just ``a``; empty
                    alternatives are ignored (``x{,a}`` matches only ``xa``)
``\\c``             the character ``c`` literally
leading dots        not special: ``*`` matches ``.git``
==================  ===========================================================

Matching is done by ``wcmatch.fnmatch`` (a maintained matcher whose fnmatch ``*`` and ``?``
cross '/' as globset's do, with backslash escapes and brace expansion). What it does not
share with globset is rewritten here before it sees a pattern: the recursive ``**`` forms
(``**/`` becomes ``{,*/}``: nothing or anything ending in '/'), globset's brace rules
(single and empty alternatives, no ``{1..3}`` sequences) and class contents (no escapes or
POSIX classes). Patterns globset rejects (an unclosed ``[`` or ``{``, a ``}`` never opened,
a trailing ``\\``, a range like ``[z-a]``) are a :class:`FlowDefinitionError`, as v0 fails
the flow. The one remaining difference: globset matches bytes, so ``?`` there matches one
byte of a multi-byte UTF-8 character; here it matches one character (``caf?.md`` matches
``café.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from wcmatch import fnmatch

from cocod.errors import FlowDefinitionError

_FLAGS = fnmatch.BRACE | fnmatch.DOTMATCH | fnmatch.FORCEUNIX | fnmatch.CASE
_MAX_EXPANSIONS = 1000
"""wcmatch expands braces into one regex each; a pattern past this is refused, not slow."""

_META = frozenset("*?[]{},\\!")


class _Bad(Exception):
    """A pattern globset would refuse; the message says why."""


def _literal(c: str) -> str:
    """Spell one literal character for wcmatch (escape only what it treats specially)."""
    return "\\" + c if c in _META else c


class _Translator:
    """One pass over a globset pattern, producing the equivalent wcmatch fnmatch pattern."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def translate(self) -> str:
        out = self._sequence(depth=0)
        if self.i < len(self.p):  # only a '}' or ',' can stop the top level early
            raise _Bad("'}' closes an alternation that was never opened; write '\\}'")
        return out

    def _sequence(self, depth: int) -> str:
        """A branch: up to an unnested ',' or '}' (inside braces) or the end."""
        p = self.p
        out: list[str] = []
        start = self.i
        while self.i < len(p):
            c = p[self.i]
            if depth > 0 and c in ",}":
                break
            if c == "}":
                raise _Bad("'}' closes an alternation that was never opened; write '\\}'")
            self.i += 1
            if c == "\\":
                if self.i >= len(p):
                    raise _Bad("it ends with a lone '\\'; write '\\\\' for a backslash")
                out.append(_literal(p[self.i]))
                self.i += 1
            elif c == "?":
                out.append("?")
            elif c == "[":
                out.append(self._class())
            elif c == "{":
                out.append(self._alternation(depth + 1))
            elif c == "*":
                out.append(self._star(branch_start=self.i - 1 == start))
            elif c == ",":
                out.append("\\,")
            else:
                out.append(_literal(c))
        return "".join(out)

    def _star(self, branch_start: bool) -> str:
        """``*`` or one of globset's recursive ``**`` forms (its parse_star rules)."""
        p = self.p
        if self.i >= len(p) or p[self.i] != "*":
            return "*"
        self.i += 1
        after = p[self.i] if self.i < len(p) else None
        prev = p[self.i - 3] if self.i >= 3 else None
        if branch_start and after == "/":
            self.i += 1
            return "{,*/}"  # RecursivePrefix: "" or anything ending in '/'
        if not branch_start and prev == "/" and after == "/":
            self.i += 1
            return "{,*/}"  # after the '/' already written: "/" or "/…/"
        return "*"  # "/**" at the end is "/" + anything; any other "**" is "*"

    def _class(self) -> str:
        """``[...]`` as globset reads it: ']' first is literal, no escapes inside."""
        p = self.p
        negated = self.i < len(p) and p[self.i] in "!^"
        if negated:
            self.i += 1
        members: list[str] = []
        while True:
            if self.i >= len(p):
                raise _Bad("a '[' is never closed; write '[[]' for a literal '['")
            c = p[self.i]
            self.i += 1
            if c == "]" and members:
                break
            if (
                (c != "-" or not members)
                and self.i + 1 < len(p)
                and p[self.i] == "-"
                and p[self.i + 1] != "]"
            ):
                end = p[self.i + 1]
                if end < c:
                    raise _Bad(f"the range '{c}-{end}' is backwards")
                members.append(f"{_class_char(c)}-{_class_char(end)}")
                self.i += 2
            else:
                members.append(_class_char(c))
        return "[" + ("!" if negated else "") + "".join(members) + "]"

    def _alternation(self, depth: int) -> str:
        """``{a,b}`` with globset's rules: empty branches dropped, one branch is bare."""
        branches: list[str] = []
        while True:
            branch = self._sequence(depth)
            if branch:
                branches.append(branch)
            if self.i >= len(self.p):
                raise _Bad("a '{' is never closed; write '\\{' for a literal '{'")
            closing = self.p[self.i] == "}"
            self.i += 1
            if closing:
                break
        if len(branches) == 1:
            return branches[0]  # bare: wcmatch must not read {1..3} as a bash sequence
        return "{" + ",".join(branches) + "}"


def _class_char(c: str) -> str:
    return "\\" + c if c in "\\[]-^!" else c


def _regexes(translated: str) -> list[str]:
    include, _exclude = fnmatch.translate(translated, flags=_FLAGS, limit=_MAX_EXPANSIONS)
    return include


@dataclass(frozen=True)
class GlobPattern:
    """One checked pattern: ``text`` as the user wrote it, ``translated`` for wcmatch."""

    text: str
    translated: str
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def compile_glob(pattern: str, knob: str = "pattern") -> GlobPattern:
    """Check and translate one pattern; raises FlowDefinitionError where v0 would fail."""
    try:
        translated = _Translator(pattern).translate()
        regexes = _regexes(translated)
    except _Bad as e:
        raise FlowDefinitionError(
            f"LocalFile {knob} {pattern!r} is not a valid glob: {e}"
        ) from None
    except Exception as e:  # wcmatch's PatternLimitException and friends
        raise FlowDefinitionError(
            f"LocalFile {knob} {pattern!r} cannot be used: {e}; split it into several patterns"
        ) from None
    return GlobPattern(pattern, translated, _combine(regexes))


def _combine(regexes: Sequence[str]) -> re.Pattern[str]:
    """Alternatives in one regex; callers use fullmatch (``$`` alone would accept a
    trailing newline, and file names may end with one)."""
    return re.compile("|".join(f"(?:{r})" for r in regexes) or "(?!)")


_SUFFIX_LITERAL = re.compile(r"[^*?\[\]{},\\!]")


def suffix_form(pattern: str) -> tuple[str, bool] | None:
    """``*`` + a literal tail → (tail, False); ``*`` + a tail whose every ASCII letter is
    a two-case class (``*.[mM][dD]``) → (lower-case tail, True); otherwise None.

    Since ``*`` matches anything ('/' included), such a pattern matches exactly the paths
    that end with the tail. Matching hundreds of them (the built-in code flow's one per
    extension) as one regex costs ~300 µs a path, as ``str.endswith`` a few µs.
    """
    if len(pattern) < 2 or pattern[0] != "*" or pattern[1] == "*":
        return None
    literal: list[str] = []
    folded: list[str] = []
    has_class = has_letter = False
    i = 1
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            pair = pattern[i + 1 : i + 3]
            if (
                pattern[i + 3 : i + 4] != "]"
                or len(pair) != 2
                or not pair.isascii()
                or not pair.isalpha()
                or pair[0].lower() != pair[1].lower()
                or pair[0] == pair[1]
            ):
                return None
            folded.append(pair[0].lower())
            has_class = True
            i += 4
            continue
        if not _SUFFIX_LITERAL.fullmatch(c):
            return None
        if c.isascii() and c.isalpha():
            has_letter = True
        literal.append(c)
        folded.append(c)
        i += 1
    if not has_class:
        return "".join(literal), False
    if has_letter:
        return None  # a literal letter beside case classes: left to the regex
    return "".join(folded), True


_LITERAL_NAME = re.compile(r"[^*?\[\]{},\\!/]+")


def name_form(pattern: str) -> str | None:
    """``**/name`` with a literal ``name`` (no '/', no glob characters) → ``name``; else None.

    ``**/`` is "nothing, or anything ending in '/'", so such a pattern matches exactly the
    paths whose last component is ``name``: one frozenset lookup on the entry's name.
    """
    if not pattern.startswith("**/"):
        return None
    name = pattern[3:]
    return name if _LITERAL_NAME.fullmatch(name) else None


def _without_recursive_prefix(pattern: str) -> str:
    """``**/*tail`` → ``*tail``: ``**/`` may match nothing and ``*`` crosses '/', so both
    match exactly the paths ending with ``tail`` (``**/*.py`` is ``*.py``)."""
    if pattern.startswith("**/*") and not pattern.startswith("**/**"):
        return pattern[3:]
    return pattern


class PatternSet:
    """Several patterns matched as one (any of them): suffix-form patterns by
    ``str.endswith`` (:func:`suffix_form`), ``**/name`` by a set of names
    (:func:`name_form`), the rest compiled once into one regex.

    ``name_only`` says every pattern is decided by the last path component alone (no tail
    holds a '/', no general pattern is left): the walk then tests an entry's name before it
    builds the relative path, with :meth:`matches_name`.
    """

    def __init__(self, patterns: Sequence[str], knob: str) -> None:
        exact: list[str] = []
        folded: dict[int, set[str]] = {}
        names: set[str] = set()
        others: list[str] = []
        for p in patterns:
            name = name_form(p)
            if name is not None:
                names.add(name)
                continue
            form = suffix_form(_without_recursive_prefix(p))
            if form is None:
                others.append(p)
            elif form[1]:
                folded.setdefault(len(form[0]), set()).add(form[0])
            else:
                exact.append(form[0])
        self.patterns = [compile_glob(p, knob) for p in others]
        self._regex = _combine([p.regex.pattern for p in self.patterns])
        self._exact = tuple(exact)
        self._folded = sorted(folded.items())
        self._names = frozenset(names)
        self.name_only = not others and not any(
            "/" in t for t in [*exact, *(t for _, ts in self._folded for t in ts)]
        )
        self.is_empty = not patterns
        self.suffixes_only = bool(exact) and not (others or folded or names)
        """Only literal tails: ``matches`` is one ``endswith(suffixes)``."""
        self.suffixes = self._exact

    def matches(self, path: str) -> bool:
        if self._exact and path.endswith(self._exact):
            return True
        if self._names and path[path.rfind("/") + 1 :] in self._names:
            return True
        for length, tails in self._folded:
            tail = path[-length:]
            if len(tail) == length and tail.isascii() and tail.lower() in tails:
                return True
        return self._regex.fullmatch(path) is not None

    def matches_name(self, name: str) -> bool:
        """:meth:`matches` for any path whose last component is ``name`` (``name_only``)."""
        if self._exact and name.endswith(self._exact):
            return True
        if name in self._names:
            return True
        for length, tails in self._folded:
            tail = name[-length:]
            if len(tail) == length and tail.isascii() and tail.lower() in tails:
                return True
        return False


class PathFilter:
    """v0's PatternMatcher: a folder is pruned when an exclude matches it; a file is in when
    (no includes, or one matches) and no exclude matches. Patterns see the relative key.

    ``name_only``: both sets are decided by a file's name alone, so
    :meth:`is_included_name` may stand for :meth:`is_included_file`.
    """

    def __init__(self, included: Sequence[str] | None, excluded: Sequence[str] | None) -> None:
        self._included = None if included is None else PatternSet(included, "included_patterns")
        self._excluded = PatternSet(excluded or (), "excluded_patterns")
        self.name_only = self._excluded.name_only and (
            self._included is None or self._included.name_only
        )
        inc = self._included
        self.name_suffixes = (
            inc.suffixes
            if inc is not None and inc.suffixes_only and self._excluded.is_empty
            else None
        )
        """Set when a file is in exactly when its name ends with one of these (``*.md``,
        ``**/*.py``, no excludes): the walk's test is then one ``str.endswith``."""

    def is_excluded(self, rel: str) -> bool:
        return self._excluded.matches(rel)

    def is_included_file(self, rel: str) -> bool:
        if self.is_excluded(rel):
            return False
        return self._included is None or self._included.matches(rel)

    def is_included_name(self, name: str) -> bool:
        """:meth:`is_included_file` for a file called ``name`` in any folder (``name_only``)."""
        if not self._excluded.is_empty and self._excluded.matches_name(name):
            return False
        return self._included is None or self._included.matches_name(name)
