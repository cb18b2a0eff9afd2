"""The benchmark corpus: real text found on any machine, replicated to N files.

Why this text: the figures must be reproducible on a clone with nothing beside it, and must
look like what users index (prose and code). The bases are this repository's ``docs/*.md``
and ``README.md``, and the Python standard library that runs this script: for each
top-level ``.py`` module one markdown file of its docstrings (module, classes, functions as
headings) and one markdown file holding its source in a fenced block (cut at a line
boundary after ``MAX_SOURCE_BYTES``, so one huge module does not dominate). With
``source="shared"`` the bases are the 61 CocoIndex docs files under
``../shared/corpus/cocoindex-v0-docs/src/content`` instead (the corpus the issues quote).

Copies: file ``i`` is base ``i % len(bases)`` under ``cNNNN/``, with a first line naming the
copy and one sentence inserted at a paragraph boundary chosen by ``random.Random(seed, i)``,
so every file differs from every other and the corpus is the same for the same seed.
Everything is written as ``.md`` and split as markdown by both engines.
"""

from __future__ import annotations

import ast
import random
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "cocoindex-v0-docs" / "src" / "content"
MAX_SOURCE_BYTES = 12_000
WORDS = [
    "index",
    "vector",
    "chunk",
    "update",
    "folder",
    "daemon",
    "table",
    "embedding",
    "source",
    "target",
    "memo",
    "tracking",
    "postgres",
    "live",
    "watch",
    "batch",
    "query",
    "model",
    "paragraph",
    "change",
    "file",
]


@dataclass(frozen=True)
class Base:
    rel: str
    text: str


@dataclass
class Corpus:
    root: Path
    files: list[str]  # paths relative to root, in creation order
    total_bytes: int
    n_bases: int

    def path(self, rel: str) -> Path:
        return self.root / rel


def _docstring_markdown(name: str, source: str) -> str | None:
    """Module, class and function docstrings of one module as a markdown document."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    parts = [f"# Module `{name}`"]
    if doc := ast.get_docstring(tree):
        parts.append(doc)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and (
            doc := ast.get_docstring(node)
        ):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            parts.append(f"## {kind} `{node.name}`\n\n{doc}")
    return "\n\n".join(parts) + "\n" if len(parts) > 1 else None


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    end = text.rfind("\n", 0, limit)
    return text[: end if end > 0 else limit]


def builtin_bases() -> list[Base]:
    bases = [Base("README.md", (REPO_ROOT / "README.md").read_text())]
    for p in sorted((REPO_ROOT / "docs").glob("*.md")):
        bases.append(Base(f"docs/{p.name}", p.read_text()))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.glob("*.py")):
        try:
            source = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if doc := _docstring_markdown(p.stem, source):
            bases.append(Base(f"stdlib-doc/{p.stem}.md", doc))
        code = _cut(source, MAX_SOURCE_BYTES)
        bases.append(Base(f"stdlib-src/{p.stem}.md", f"# `{p.name}`\n\n```python\n{code}\n```\n"))
    return bases


def shared_bases(root: Path = SHARED_CORPUS) -> list[Base]:
    found = sorted({p for pat in ("*.md", "*.mdx") for p in root.rglob(pat) if p.is_file()})
    if not found:
        raise SystemExit(f"--corpus shared: no *.md / *.mdx files under {root}")
    return [Base(p.relative_to(root).with_suffix(".md").as_posix(), p.read_text()) for p in found]


def copy_text(base: Base, copy: int, index: int, seed: int) -> str:
    """One copy of a base: a naming first line and one seeded sentence at a paragraph break."""
    rng = random.Random(f"{seed}:{index}")
    paras = base.text.split("\n\n")
    at = rng.randrange(1, len(paras) + 1) if len(paras) > 1 else 1
    sentence = " ".join(rng.choice(WORDS) for _ in range(8)).capitalize() + f" (copy {copy})."
    paras.insert(at, sentence)
    return f"<!-- copy {copy} of {base.rel} -->\n\n" + "\n\n".join(paras)


def build_corpus(dest: Path, n_files: int, *, seed: int = 0, source: str = "builtin") -> Corpus:
    bases = shared_bases() if source == "shared" else builtin_bases()
    if dest.exists():
        shutil.rmtree(dest)
    files: list[str] = []
    total = 0
    for i in range(n_files):
        copy, b = divmod(i, len(bases))
        rel = f"c{copy:04d}/{bases[b].rel}"
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = copy_text(bases[b], copy, i, seed).encode()
        path.write_bytes(data)
        files.append(rel)
        total += len(data)
    return Corpus(dest, files, total, len(bases))


def edit_file(path: Path, marker: str) -> None:
    """Append a sentence holding ``marker`` to a prose paragraph near the middle."""
    paras = path.read_text().split("\n\n")
    order = list(range(len(paras) // 2, len(paras))) + list(range(len(paras) // 2))
    target = next(
        (i for i in order if len(paras[i]) >= 40 and "```" not in paras[i]), len(paras) // 2
    )
    paras[target] = paras[target].rstrip() + f" Edited {marker}."
    path.write_text("\n\n".join(paras))


def pick_files(corpus: Corpus, count: int, *, seed: int, salt: str) -> list[str]:
    """``count`` distinct files chosen deterministically (for edits and deletes)."""
    rng = random.Random(f"{seed}:{salt}")
    return rng.sample(corpus.files, min(count, len(corpus.files)))


# --- A code repository (bench/progress_eta.py) -------------------------------------------

CODE_SUFFIXES = (".py", ".js", ".ts", ".rs", ".go", ".java", ".c", ".h", ".cpp", ".rb")
MAX_CODE_BYTES = 4_000
SKIPPED_STDLIB_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "lib2to3"})


def code_bases(shared: Path = REPO_ROOT.parent / "shared" / "corpus") -> tuple[str, list[Base]]:
    """Source files to replicate: the code under ``../shared/corpus`` when it has any,
    else the standard library's ``.py`` modules (tests left out), each cut at a line
    boundary after :data:`MAX_CODE_BYTES` so a few huge modules do not dominate."""
    found: list[tuple[str, Path]] = []
    if shared.is_dir():
        found = [
            (p.relative_to(shared).as_posix(), p)
            for p in sorted(shared.rglob("*"))
            if p.is_file() and p.suffix in CODE_SUFFIXES
        ]
    origin = str(shared)
    if not found:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        origin = str(stdlib)
        found = [
            (p.relative_to(stdlib).as_posix(), p)
            for p in sorted(stdlib.rglob("*.py"))
            if not set(p.relative_to(stdlib).parts[:-1]) & SKIPPED_STDLIB_DIRS
        ]
    bases = []
    for rel, p in found:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            bases.append(Base(rel, _cut(text, MAX_CODE_BYTES) + "\n"))
    return origin, bases


def _comment(rel: str) -> str:
    return (
        "//"
        if Path(rel).suffix in {".js", ".ts", ".rs", ".go", ".java", ".c", ".h", ".cpp"}
        else "#"
    )


def build_code_repo(
    dest: Path, n_files: int, *, seed: int = 0, edit: str = "header", max_bases: int = 0
) -> Corpus:
    """``n_files`` source files: copy ``k`` of base ``b`` is ``<dir>/<stem>_v<k>.<ext>``.

    Why copies sit beside their base rather than under one folder per copy: the engine
    memoizes embeddings by chunk text, so a copy costs only its edited chunk. With a
    folder per copy the first folder would hold almost all the model's work and the rest
    would be nearly free, a cost profile no real repository has; side by side, each
    stretch of the listing costs about the same per file, as in a repository whose files
    all differ. The per-copy edit (copies after the first) is ``edit``: ``"header"``, a
    first line naming the copy with seeded words (one new chunk text per copy, so one
    embedding per file), or ``"shift"``, as many blank lines at the top as the copy's
    number (every row's location and line numbers move, the chunk texts do not, so the
    model's work is the bases' and the copies cost splitting and writing). ``max_bases``
    (0: all) takes that many bases, evenly spaced in path order.
    Also written: a ``.gitignore`` (``build/``, ``*.log``, ``__pycache__/``) and files it
    ignores, a ``node_modules/``, and ``git init``'s ``.git/``; none of them may be
    indexed, so ``Corpus.files`` lists only the files the code flow must index.
    """
    import subprocess

    _origin, bases = code_bases()
    if 0 < max_bases < len(bases):
        bases = [bases[i * len(bases) // max_bases] for i in range(max_bases)]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    (dest / ".gitignore").write_text("build/\n*.log\n__pycache__/\n")
    for rel, text in (
        ("build/lib/generated.py", "GENERATED = True\n"),
        ("build/out.txt", "build output\n"),
        ("run.log", "a log line\n"),
        ("src/__pycache__/x.py", "X = 1\n"),
        ("node_modules/left-pad/index.js", "module.exports = (s) => s;\n"),
    ):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    files: list[str] = []
    total = 0
    for i in range(n_files):
        copy, b = divmod(i, len(bases))
        base = bases[b]
        p = Path(base.rel)
        name = p.name if copy == 0 else f"{p.stem}_v{copy}{p.suffix}"
        rel = (Path("src") / p.parent / name).as_posix()
        if copy == 0:
            text = base.text
        elif edit == "shift":
            text = "\n" * copy + base.text
        else:
            rng = random.Random(f"{seed}:{i}")
            words = " ".join(rng.choice(WORDS) for _ in range(8))
            text = f"{_comment(base.rel)} copy {copy} of {base.rel}: {words}\n{base.text}"
        data = text.encode()
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(rel)
        total += len(data)
    return Corpus(dest, files, total, len(bases))
