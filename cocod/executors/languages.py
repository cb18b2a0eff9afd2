"""The programming-language registry shared by `SplitRecursively` and `DetectProgrammingLanguage`.

CocoIndex v0 keeps one table that maps a language's canonical name, its aliases and its file
extensions to one entry; both the splitter's ``language`` argument and
``DetectProgrammingLanguage`` look names up there, so the two always agree.  The canonical
names are the ones tree-sitter-language-pack uses (``python``, ``cpp``, ``csharp``, ``tsx``, ...),
which is what v0 returns from ``DetectProgrammingLanguage``.

Only some entries carry a tree-sitter grammar name: those are the languages v0 splits
syntactically.  The others are still detected, and are split as plain text.

Grammars are loaded without touching the network, ever.  tree-sitter-language-pack 0.x ships
its grammars inside the wheel; 1.x downloads them on first use from a release page, which on an
offline machine fails (or, behind a firewall that drops packets, hangs).  So with 1.x we only
load grammars that are already in its local cache, and we also accept the per-language
``tree-sitter-<lang>`` wheels (``tree_sitter_python`` …), which bundle their grammar.  A language
whose grammar cannot be had this way is split as plain text: never an error.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LANGUAGES",
    "LanguageInfo",
    "detect_programming_language",
    "load_tree_sitter_language",
    "resolve_language",
]


@dataclass(frozen=True, slots=True)
class LanguageInfo:
    """One language of the registry.

    ``aliases`` are extra names (``"js"``, ``"golang"``, ``"c++"``); ``extensions`` carry their
    leading dot (``".py"``).  ``tree_sitter_name`` is the grammar's name in
    tree-sitter-language-pack, or ``None`` when the language is split as plain text.
    """

    name: str
    extensions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    tree_sitter_name: str | None = None

    @property
    def has_syntax_splitting(self) -> bool:
        """Whether v0 splits this language along its syntax tree (markdown included)."""
        return self.tree_sitter_name is not None


def _lang(
    name: str,
    extensions: str = "",
    aliases: str = "",
    *,
    grammar: bool | str = False,
) -> LanguageInfo:
    """Build an entry from space-separated extension/alias lists, to keep the table compact."""
    ts_name: str | None
    if grammar is True:
        ts_name = name
    elif isinstance(grammar, str):
        ts_name = grammar
    else:
        ts_name = None
    return LanguageInfo(
        name=name,
        extensions=tuple(extensions.split()),
        aliases=tuple(aliases.split()),
        tree_sitter_name=ts_name,
    )


# The table follows v0's registry (names as in tree-sitter-language-pack, the same extensions,
# the same set of syntax-split languages), sorted by name.
LANGUAGES: tuple[LanguageInfo, ...] = (
    _lang("actionscript", ".as"),
    _lang("ada", ".ada .adb .ads"),
    _lang("agda", ".agda"),
    _lang("apex", ".cls .trigger"),
    _lang("arduino", ".ino"),
    _lang("asm", ".asm .a51 .i .nas .nasm .s"),
    _lang("astro", ".astro"),
    _lang("bash", ".sh .bash"),
    _lang("beancount", ".beancount"),
    _lang("bibtex", ".bib .bibtex"),
    _lang("bicep", ".bicep .bicepparam"),
    _lang("bitbake", ".bb .bbappend .bbclass"),
    _lang("c", ".c .cats .h.in .idc", grammar=True),
    _lang("cairo", ".cairo"),
    _lang("capnp", ".capnp"),
    _lang("chatito", ".chatito"),
    _lang("clarity", ".clar"),
    _lang("clojure", ".clj .boot .cl2 .cljc .cljs .cljs.hl .cljscm .cljx .hic"),
    _lang("cmake", ".cmake .cmake.in"),
    _lang("commonlisp", ".lisp .asd .cl .l .lsp .ny .podsl .sexp"),
    _lang(
        "cpp",
        ".cpp .h .c++ .cc .cp .cppm .cxx .h++ .hh .hpp .hxx .inl .ipp .ixx .tcc .tpp .txx",
        "c++",
        grammar=True,
    ),
    _lang("cpon", ".cpon"),
    _lang("csharp", ".cs .cake .cs.pp .csx .linq", "cs c#", grammar=True),
    _lang("css", ".css .scss", grammar=True),
    _lang("csv", ".csv"),
    _lang("cuda", ".cu .cuh"),
    _lang("d", ".d .di"),
    _lang("dart", ".dart"),
    _lang("dockerfile", ".dockerfile .containerfile"),
    _lang("dtd", ".dtd", grammar=True),
    _lang("elisp", ".el"),
    _lang("elixir", ".ex .exs"),
    _lang("elm", ".elm", grammar=True),
    _lang("embeddedtemplate", ".ets"),
    _lang("erlang", ".erl .app .app.src .escript .hrl .xrl .yrl"),
    _lang("fennel", ".fnl"),
    _lang("firrtl", ".fir"),
    _lang("fish", ".fish"),
    _lang("fortran", ".f .f90 .f95 .f03", "f f90 f95 f03", grammar=True),
    _lang("fsharp", ".fs .fsi .fsx"),
    _lang("func", ".func"),
    _lang("gdscript", ".gd"),
    _lang("gitattributes", ".gitattributes"),
    _lang("gitignore", ".gitignore"),
    _lang("gleam", ".gleam"),
    _lang("glsl", ".glsl .vert .frag"),
    _lang("gn", ".gn .gni"),
    _lang("go", ".go", "golang", grammar=True),
    _lang("gomod", "", "go.mod"),
    _lang("gosum", "", "go.sum"),
    _lang("graphql", ".graphql .gql"),
    _lang("groovy", ".groovy .grt .gtpl .gvy .gradle"),
    _lang("hack", ".hack"),
    _lang("hare", ".ha"),
    _lang("haskell", ".hs .hs-boot .hsc"),
    _lang("haxe", ".hx"),
    _lang("hcl", ".hcl .tf"),
    _lang("heex", ".heex"),
    _lang("hlsl", ".hlsl"),
    _lang("html", ".html .htm .hta .html.hl .xht .xhtml", grammar=True),
    _lang("hyprlang", ".hl"),
    _lang("ini", ".ini .cfg"),
    _lang("ispc", ".ispc"),
    _lang("janet", ".janet"),
    _lang("java", ".java .jav .jsh", grammar=True),
    _lang(
        "javascript",
        ".js ._js .bones .cjs .es .es6 .gs .jake .javascript .jsb .jscad .jsfl .jslib .jsm"
        " .jspre .jss .jsx .mjs .njs .pac .sjs .ssjs .xsjs .xsjslib",
        "js",
        grammar=True,
    ),
    _lang(
        "json",
        ".json .4dform .4dproject .avsc .geojson .gltf .har .ice .json-tmlanguage .json.example"
        " .jsonl .mcmeta .sarif .tact .tfstate .tfstate.backup .topojson .webapp .webmanifest"
        " .yy .yyp",
        grammar=True,
    ),
    _lang("jsonnet", ".jsonnet"),
    _lang("julia", ".jl", grammar=True),
    _lang("kdl", ".kdl"),
    _lang("kotlin", ".kt .ktm .kts", grammar=True),
    _lang("latex", ".tex"),
    _lang("linkerscript", ".ld"),
    _lang("llvm", ".ll"),
    _lang("lua", ".lua .nse .p8 .pd_lua .rbxs .rockspec .wlua"),
    _lang("luau", ".luau"),
    _lang("magik", ".magik"),
    _lang("make", ".mak .make .makefile .mk .mkfile"),
    # Markdown is split along its tree-sitter (block) grammar, as in v0; ``inline`` and code
    # blocks are terminal there (cocod.executors.splitting.syntax).
    _lang(
        "markdown",
        ".md .livemd .markdown .mdown .mdwn .mdx .mkd .mkdn .mkdown .ronn .scd .workbook",
        "md",
        grammar=True,
    ),
    _lang("mermaid", ".mmd"),
    _lang("meson", "", "meson.build"),
    _lang("netlinx", ".axi"),
    _lang("nim", ".nim .nim.cfg .nimble .nimrod .nims"),
    _lang("ninja", ".ninja"),
    _lang("nix", ".nix"),
    _lang("nqc", ".nqc"),
    _lang("pascal", ".pas .dfm .dpr .lpr .pascal", "pas dpr delphi", grammar=True),
    _lang("pem", ".pem"),
    _lang("perl", ".pl .al .cgi .fcgi .perl .ph .plx .pm .psgi .t"),
    _lang("pgn", ".pgn"),
    _lang("php", ".php", grammar=True),
    _lang("po", ".po"),
    _lang("pony", ".pony"),
    _lang("powershell", ".ps1"),
    _lang("prisma", ".prisma"),
    _lang("properties", ".properties"),
    _lang("proto", ".proto"),
    _lang("psv", ".psv"),
    _lang("puppet", ".pp"),
    _lang("purescript", ".purs"),
    _lang("python", ".py .pyw .pyi .pyx .pxd .pxi", grammar=True),
    _lang("qmljs", ".qml"),
    _lang("r", ".r", grammar=True),
    _lang("racket", ".rkt"),
    _lang("rbs", ".rbs"),
    _lang("re2c", ".re"),
    _lang("rego", ".rego"),
    _lang("requirements", "", "requirements.txt"),
    _lang("ron", ".ron"),
    _lang("rst", ".rst"),
    _lang("ruby", ".rb", grammar=True),
    _lang("rust", ".rs", "rs", grammar=True),
    _lang("scala", ".scala", grammar=True),
    _lang("scheme", ".ss"),
    _lang("slang", ".slang"),
    _lang("smali", ".smali"),
    _lang("smithy", ".smithy"),
    _lang("solidity", ".sol", grammar=True),
    _lang("sparql", ".sparql"),
    _lang("sql", ".sql", grammar=True),
    _lang("squirrel", ".nut"),
    _lang("starlark", ".star .bzl"),
    _lang("svelte", ".svelte", grammar=True),
    _lang("swift", ".swift", grammar=True),
    _lang("tablegen", ".td"),
    _lang("tcl", ".tcl"),
    _lang("thrift", ".thrift"),
    _lang("toml", ".toml", grammar=True),
    _lang("tsv", ".tsv"),
    _lang("tsx", ".tsx", grammar=True),
    _lang("twig", ".twig"),
    _lang("typescript", ".ts", "ts", grammar=True),
    _lang("typst", ".typ"),
    _lang("udev", ".rules"),
    _lang("ungrammar", ".ungram"),
    _lang("uxntal", ".tal"),
    _lang("verilog", ".vh"),
    _lang("vhdl", ".vhd .vhdl"),
    _lang("vim", ".vim"),
    _lang("vue", ".vue", grammar=True),
    _lang("wast", ".wast"),
    _lang("wat", ".wat"),
    _lang("wgsl", ".wgsl"),
    _lang("xcompose", ".xcompose"),
    _lang("xml", ".xml", grammar=True),
    _lang("yaml", ".yaml .yml", grammar=True),
    _lang("yuck", ".yuck"),
    _lang("zig", ".zig"),
)


def _build_index(languages: tuple[LanguageInfo, ...]) -> dict[str, LanguageInfo]:
    """Map every lower-cased name, alias and extension to its entry; a clash is a bug here."""
    index: dict[str, LanguageInfo] = {}
    for info in languages:
        for key in (info.name, *info.aliases, *info.extensions):
            folded = key.lower()
            if folded in index:
                raise RuntimeError(f"language registry: `{key}` is listed twice")
            index[folded] = info
    return index


_INDEX: dict[str, LanguageInfo] = _build_index(LANGUAGES)


def resolve_language(name_or_ext: str) -> LanguageInfo | None:
    """Find a language by name, alias or extension (``".py"``), ignoring case.

    An extension needs its dot (``".md"``) unless it is also an alias (``"md"``, ``"rs"``,
    ``"ts"``), exactly as in v0.
    """
    return _INDEX.get(name_or_ext.lower())


def detect_programming_language(filename: str) -> str | None:
    """Name the language of ``filename`` from its last extension, or ``None`` when unknown.

    Like v0, only the text from the last dot on is looked at (``"a/b.tar.py"`` → ``".py"``),
    case-insensitively; a name without a dot (``"Makefile"``) is not recognised.
    """
    dot = filename.rfind(".")
    if dot < 0:
        return None
    info = _INDEX.get(filename[dot:].lower())
    return info.name if info is not None else None


# ---------------------------------------------------------------------------------------------
# Grammars.

# Per-language wheels (``pip install tree-sitter-python``) and the function that returns the
# grammar pointer, for grammars whose wheel does not follow the ``tree_sitter_<name>.language``
# pattern.
_GRAMMAR_WHEELS: dict[str, tuple[str, str]] = {
    "csharp": ("tree_sitter_c_sharp", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "php": ("tree_sitter_php", "language_php"),
    "xml": ("tree_sitter_xml", "language_xml"),
    "dtd": ("tree_sitter_xml", "language_dtd"),
    "kotlin": ("tree_sitter_kotlin", "language"),
    "markdown": ("tree_sitter_markdown", "language"),
}

_grammar_lock = threading.Lock()
_grammar_cache: dict[str, Any] = {}
_MISSING = object()


def _from_language_pack(ts_name: str) -> Any:
    """The grammar from tree-sitter-language-pack if it is on disk already, else ``None``.

    1.x exposes ``downloaded_languages()`` and downloads anything else on demand, which we must
    never trigger; 0.x has no such function and bundles every grammar.
    """
    try:
        pack: Any = importlib.import_module("tree_sitter_language_pack")
    except ImportError:
        return None
    try:
        downloaded: Callable[[], list[str]] | None = getattr(pack, "downloaded_languages", None)
        if downloaded is not None and ts_name not in set(downloaded()):
            return None
        return pack.get_language(ts_name)
    except Exception:
        # Any failure of an optional accelerator means "no grammar": plain-text splitting.
        return None


def _from_grammar_wheel(ts_name: str) -> Any:
    """The grammar from a per-language ``tree-sitter-<lang>`` wheel, if one is installed."""
    module_name, function_name = _GRAMMAR_WHEELS.get(
        ts_name, (f"tree_sitter_{ts_name}", "language")
    )
    try:
        module: Any = importlib.import_module(module_name)
        tree_sitter: Any = importlib.import_module("tree_sitter")
        return tree_sitter.Language(getattr(module, function_name)())
    except Exception:
        return None


def load_tree_sitter_language(info: LanguageInfo) -> Any:
    """The ``tree_sitter.Language`` for ``info``, or ``None`` if no grammar is available offline.

    A per-language ``tree-sitter-<lang>`` wheel wins over tree-sitter-language-pack when both
    are installed.  Cached per process (a grammar load costs a shared-library open); the
    result is typed ``Any`` because the grammar packages are optional.
    """
    ts_name = info.tree_sitter_name
    if ts_name is None:
        return None
    cached = _grammar_cache.get(ts_name, _MISSING)
    if cached is not _MISSING:
        return cached
    with _grammar_lock:
        cached = _grammar_cache.get(ts_name, _MISSING)
        if cached is _MISSING:
            # A per-language wheel first: it can be pinned to the grammar version CocoIndex
            # v0 links (tree-sitter-python 0.23.6, ...), which gives v0's syntax trees and so
            # v0's chunks (docs/splitter-parity.md); the language pack's grammars are newer.
            cached = _from_grammar_wheel(ts_name)
            if cached is None:
                cached = _from_language_pack(ts_name)
            _grammar_cache[ts_name] = cached
    return cached
