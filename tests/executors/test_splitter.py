"""`RecursiveSplitter`: real documents, real code, hostile input and random text.

Every check recomputes what it verifies independently of the splitter (slices, byte sizes,
line and column), so a wrong offset, an oversize chunk or a lost piece of text fails here.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocod.executors.languages import load_tree_sitter_language, resolve_language
from cocod.executors.splitter import Chunk, CustomLanguage, RecursiveSplitter, TextPosition
from cocod.executors.splitting.atoms import collect_atoms
from cocod.executors.splitting.separators import DEFAULT_SEPARATORS
from cocod.executors.splitting.text import WHITESPACE, Text

REPO = Path(__file__).resolve().parents[2]
SPLITTER_SOURCES = sorted((REPO / "cocod/executors/splitting").glob("*.py"))


# Whitespace and the punctuation the built-in separator levels match.
SEPARATOR_CHARS = WHITESPACE + ".?!;:-—,。？！；：，"


def markdown_docs() -> list[Path]:
    """Real markdown that ships with the repository: the README and docs/*.md."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(paths) >= 5, paths  # the repository's own docs, never skipped
    return paths


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def expected_position(text: str, offset: int) -> TextPosition:
    line_start = text.rfind("\n", 0, offset) + 1
    return TextPosition(offset, text.count("\n", 0, offset) + 1, offset - line_start + 1)


def check_chunks(
    text: str,
    chunks: list[Chunk],
    chunk_size: int,
    *,
    overlap: int = 0,
    covers_all: bool = True,
) -> None:
    """The invariants every split must satisfy, recomputed from scratch."""
    for chunk in chunks:
        start, end = chunk.location
        assert 0 <= start < end <= len(text)
        assert text[start:end] == chunk.text
        assert chunk.text.strip(), "no blank chunk"
        assert chunk.text == chunk.text.rstrip(), "chunks are trimmed at the end"
        # At the start, as in v0: only the indentation of a chunk's first line is kept.
        lead = chunk.text[: len(chunk.text) - len(chunk.text.lstrip())]
        assert not lead or (set(lead) <= {" ", "\t"} and (start == 0 or text[start - 1].isspace()))
        # Larger than chunk_size only when it is one character wider than the budget.
        assert nbytes(chunk.text) <= chunk_size or len(chunk.text) == 1, chunk
        assert chunk.start == expected_position(text, start)
        assert chunk.end == expected_position(text, end)
    for before, after in itertools.pairwise(chunks):
        assert before.location[0] < after.location[0], "chunks are in order"
        assert before.location[1] < after.location[1], "no chunk is nested in another"
        if after.location[0] < before.location[1]:
            shared = text[after.location[0] : before.location[1]]
            assert nbytes(shared) <= overlap, (before, after)
    if covers_all:
        # Built-in separators are whitespace and the punctuation v0's separator regexes
        # match (left out at a chunk boundary, as in v0), so nothing else may be lost.
        covered_to = 0
        for chunk in chunks:
            lost = text[covered_to : chunk.location[0]]
            assert not lost.strip(SEPARATOR_CHARS), "text lost between chunks"
            covered_to = max(covered_to, chunk.location[1])
        assert not text[covered_to:].strip(SEPARATOR_CHARS), "text lost at the end"


@pytest.fixture(scope="module")
def splitter() -> RecursiveSplitter:
    return RecursiveSplitter()


# --- basics --------------------------------------------------------------------------------


def test_offsets_are_characters_not_bytes(splitter: RecursiveSplitter) -> None:
    # Verified against v0: "héllo wörld" -> location (0, 11) although it is 13 bytes.
    [chunk] = splitter.split("héllo wörld", 100)
    assert chunk.location == (0, 11)
    assert chunk.start == TextPosition(0, 1, 1)
    assert chunk.end == TextPosition(11, 1, 12)


def test_small_text_is_one_chunk_from_its_line_start(splitter: RecursiveSplitter) -> None:
    # CocoIndex 0.3.39: trailing whitespace is trimmed, the first line's indentation is kept.
    text = "  \n\t hello, world \n\n"
    [chunk] = splitter.split(text, 100)
    assert chunk.text == "\t hello, world"
    assert chunk.location == (3, 17)
    assert chunk.start == TextPosition(3, 2, 1)


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \r\n", "\u3000\u00a0 "])
def test_empty_or_blank_text_has_no_chunks(splitter: RecursiveSplitter, text: str) -> None:
    assert splitter.split(text, 10) == []
    assert splitter.split(text, 10, language="markdown") == []


def test_v0_basic_example(splitter: RecursiveSplitter) -> None:
    # The example from v0's own unit tests, with its expected result.
    text = "Linea 1.\nLinea 2.\n\nLinea 3."
    chunks = splitter.split(text, 15, 5, 0)
    assert [c.text for c in chunks] == ["Linea 1.", "Linea 2.", "Linea 3."]
    assert [c.start.line for c in chunks] == [1, 2, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": -5}, "chunk_size"),
        ({"chunk_size": 10, "min_chunk_size": -1}, "min_chunk_size"),
        ({"chunk_size": 10, "chunk_overlap": -1}, "chunk_overlap"),
    ],
)
def test_invalid_sizes_are_rejected(
    splitter: RecursiveSplitter, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        splitter.split("some text", **kwargs)


# --- sizes in bytes, non-ASCII -------------------------------------------------------------


def test_sizes_are_utf8_bytes_and_cjk_sentences_are_boundaries(
    splitter: RecursiveSplitter,
) -> None:
    sentence = "这是一个句子。"  # 7 characters, 21 bytes
    text = sentence * 40
    chunks = splitter.split(text, 45)
    check_chunks(text, chunks, 45)
    # 45 bytes hold two sentences (42 bytes) but would hold 15 characters: bytes are counted.
    # The separator "。" at a chunk's end is left out, as in v0.
    whole = (sentence, sentence * 2)
    assert all(c.text + "。" in whole or c.text in whole for c in chunks), [c.text for c in chunks]
    assert len(chunks) >= 20


def test_emoji_and_accents(splitter: RecursiveSplitter) -> None:
    text = "Ünïcödé 😀 test. " * 30 + "\n" + "😀" * 50
    chunks = splitter.split(text, 40)
    check_chunks(text, chunks, 40)
    assert "".join(c.text for c in chunks).count("😀") == 80


def test_chunk_size_smaller_than_a_character(splitter: RecursiveSplitter) -> None:
    # The one documented case of an oversize chunk: a 4-byte character with chunk_size 3.
    chunks = splitter.split("😀😀😀", 3)
    assert [c.text for c in chunks] == ["😀", "😀", "😀"]
    assert [c.location for c in chunks] == [(0, 1), (1, 2), (2, 3)]


# --- plain-text hierarchy ------------------------------------------------------------------


def prose(paragraphs: int, sentences: int) -> str:
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    out = []
    for p in range(paragraphs):
        out.append(
            " ".join(
                " ".join(words[(p + s + k) % len(words)] for k in range(8)).capitalize() + "."
                for s in range(sentences)
            )
        )
    return "\n\n".join(out)


def test_plain_text_prefers_paragraph_boundaries(splitter: RecursiveSplitter) -> None:
    text = prose(6, 4)  # paragraphs of ~210 bytes
    paragraphs = text.split("\n\n")
    chunks = splitter.split(text, 500, 200)
    check_chunks(text, chunks, 500)
    for chunk in chunks:
        parts = chunk.text.split("\n\n")
        assert all(part in paragraphs for part in parts), chunk.text


def test_plain_text_falls_back_to_sentence_boundaries(splitter: RecursiveSplitter) -> None:
    text = prose(1, 30)  # one long paragraph
    chunks = splitter.split(text, 200)
    check_chunks(text, chunks, 200)
    assert len(chunks) > 5
    # Cut at sentence ends; the separator (". ") is left out, as in v0.
    assert all(text[c.location[1]] == "." for c in chunks[:-1]), [c.text[-10:] for c in chunks]


def test_unknown_language_is_plain_text(splitter: RecursiveSplitter) -> None:
    text = prose(5, 5)
    assert splitter.split(text, 300, language="klingon") == splitter.split(text, 300)


# --- overlap -------------------------------------------------------------------------------


def test_overlap_is_bounded_and_happens(splitter: RecursiveSplitter) -> None:
    text = prose(1, 60)
    no_overlap = splitter.split(text, 300)
    check_chunks(text, no_overlap, 300)
    assert all(a.location[1] <= b.location[0] for a, b in itertools.pairwise(no_overlap))
    chunks = splitter.split(text, 300, chunk_overlap=100)
    check_chunks(text, chunks, 300, overlap=100)
    overlapping = [(a, b) for a, b in itertools.pairwise(chunks) if b.location[0] < a.location[1]]
    assert len(overlapping) >= len(chunks) // 2, "overlap was asked for but rarely given"


def test_overlap_is_capped_at_min_chunk_size(splitter: RecursiveSplitter) -> None:
    text = prose(1, 60)
    chunks = splitter.split(text, 300, min_chunk_size=60, chunk_overlap=250)
    # check_chunks fails if any two chunks share more than 60 bytes.
    check_chunks(text, chunks, 300, overlap=60)


# --- markdown ------------------------------------------------------------------------------


def test_markdown_splits_at_headings(splitter: RecursiveSplitter) -> None:
    sections = [f"## Section {k}\n\n{prose(2, 3)}" for k in range(5)]
    text = "# Title\n\nIntro line.\n\n" + "\n\n".join(sections)
    chunks = splitter.split(text, 1000, language="markdown")
    check_chunks(text, chunks, 1000)
    # Every section (about 700 bytes) fits a chunk, so each chunk is whole sections.
    for chunk in chunks[1:]:
        assert chunk.text.startswith("## Section"), chunk.text[:40]
    for section in sections:
        assert any(section in c.text for c in chunks)
    # Plain text has no notion of headings and cuts elsewhere.
    plain = splitter.split(text, 1000)
    assert not all(c.text.startswith(("## Section", "# Title")) for c in plain)


@pytest.mark.parametrize("language", ["markdown", "MarkDown", "md", ".md", ".MDX"])
def test_markdown_names_and_extensions(splitter: RecursiveSplitter, language: str) -> None:
    text = "# A\n\n" + prose(3, 4) + "\n\n# B\n\n" + prose(3, 4)
    assert splitter.split(text, 700, language=language) == splitter.split(
        text, 700, language="markdown"
    )


def test_markdown_keeps_fenced_code_intact(splitter: RecursiveSplitter) -> None:
    code = "```python\n" + "\n\n".join(f"# not a heading {k}\nx_{k} = {k}" for k in range(25))
    code += "\n```"
    text = "# Guide\n\n" + prose(3, 4) + "\n\n" + code + "\n\n" + prose(3, 4)
    assert 500 < nbytes(code) < 900
    chunks = splitter.split(text, 1000, language="markdown")
    check_chunks(text, chunks, 1000)
    assert any(code in c.text for c in chunks), [c.text[:30] for c in chunks]
    # The '# not a heading' lines inside the fence never start a chunk.
    assert not any(c.text.startswith("# not a heading") for c in chunks)


def test_real_markdown_documents(splitter: RecursiveSplitter) -> None:
    for path in markdown_docs():
        text = path.read_text(encoding="utf-8")
        for size, overlap in ((2000, 500), (400, 0), (300, 100)):
            chunks = splitter.split(text, size, chunk_overlap=overlap, language="markdown")
            check_chunks(text, chunks, size, overlap=overlap)
            if nbytes(text) > size and overlap:
                # Small chunks are avoided whenever possible; with overlap, atoms are fine
                # enough that it always is on these documents.
                assert all(nbytes(c.text) >= size // 2 for c in chunks), path


def test_real_markdown_chunk_starts_prefer_headings(splitter: RecursiveSplitter) -> None:
    def starts_at_headings(language: str | None) -> tuple[int, int]:
        at_heading = total = 0
        for path in markdown_docs():
            text = path.read_text(encoding="utf-8")
            headings = {m.start() for m in re.finditer(r"(?m)^#{1,6} ", text)}
            chunks = splitter.split(text, 2000, chunk_overlap=500, language=language)
            for chunk in chunks[1:]:
                total += 1
                at_heading += chunk.location[0] in headings
        return at_heading, total

    # v0's cost model prefers section edges (about half of the chunks begin at a heading on
    # these documents, the rest where a long section is cut); plain text knows no headings.
    at_heading, total = starts_at_headings("markdown")
    plain_at_heading, _ = starts_at_headings(None)
    assert at_heading > total // 3, (at_heading, total)
    assert at_heading > 2 * plain_at_heading, (at_heading, plain_at_heading)


# --- unsplittable and hostile input --------------------------------------------------------


def test_ten_megabyte_line_is_cut(splitter: RecursiveSplitter) -> None:
    text = "x" * 10_000_000
    chunks = splitter.split(text, 2000, chunk_overlap=500)
    assert all(nbytes(c.text) <= 2000 for c in chunks)
    assert len(chunks) >= 5000
    assert chunks[0].location[0] == 0 and chunks[-1].location[1] == len(text)
    # Contiguous coverage, at most the allowed overlap between neighbours.
    for a, b in itertools.pairwise(chunks):
        assert a.location[1] - 500 <= b.location[0] <= a.location[1]


def test_unsplittable_multibyte_line_is_cut_at_character_boundaries(
    splitter: RecursiveSplitter,
) -> None:
    text = "é😀漢" * 100_000  # 9 bytes per 3 characters, no separator at any level
    chunks = splitter.split(text, 1000)
    check_chunks(text, chunks, 1000)
    assert sum(len(c.text) for c in chunks) == len(text)
    # Cut pieces are merged back up to the budget, not left small.
    assert min(nbytes(c.text) for c in chunks[:-1]) > 900
    # As code (the grammar sees identifiers and errors), still bounded and complete.
    check_chunks(text, splitter.split(text, 1000, language="python"), 1000)


@pytest.mark.parametrize("language", [None, "json", "python", "javascript", "c", "markdown"])
def test_deeply_nested_brackets(splitter: RecursiveSplitter, language: str | None) -> None:
    text = "[" * 1_000_000 + "]" * 1_000_000
    chunks = splitter.split(text, 2000, language=language)
    check_chunks(text, chunks, 2000)


def test_deeply_nested_code(splitter: RecursiveSplitter) -> None:
    text = "".join("    " * k + f"if x{k}:\n" for k in range(1500)) + " " * 6000 + "pass\n"
    for language in ("python", None):
        chunks = splitter.split(text, 1000, language=language)
        check_chunks(text, chunks, 1000)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("python", "def broken(:\n    return [1, 2\nclass\n" * 300),
        ("rust", "fn main( { let x = ; }}}} impl for <<>> " * 400),
        ("json", '{"a": [1, 2, {"b": }, "c": tru' * 400),
        ("yaml", "a: [b, {c: d\n  - - : :\n\t- x" * 400),
        ("typescript", "function f<T(x: ) => {{{ class { " * 400),
    ],
)
def test_invalid_syntax_never_raises(splitter: RecursiveSplitter, language: str, text: str) -> None:
    chunks = splitter.split(text, 500, language=language)
    check_chunks(text, chunks, 500)


# --- syntax-aware splitting ----------------------------------------------------------------

# Three top-level items per language, each with a blank line inside and none between them:
# plain text would cut at the inner blank lines, a syntax tree cuts between the items.
ITEMS: dict[str, list[str]] = {
    "python": [
        f"def handler_{k}(event, context):\n"
        f'    """Handle event number {k} and return a summary of it."""\n'
        f"    total = sum(event.values()) + {k}\n\n"
        f"    message = f'processed {{len(event)}} fields for {k}'\n"
        f"    return {{'total': total, 'message': message}}"
        for k in range(3)
    ],
    "rust": [
        f"pub fn compute_{k}(values: &[i64]) -> i64 {{\n"
        f"    let base: i64 = values.iter().sum();\n\n"
        f"    let scaled = base * {k + 2} + values.len() as i64;\n"
        f"    if scaled > 100 {{ scaled - {k} }} else {{ scaled + {k} }}\n}}"
        for k in range(3)
    ],
    "go": [
        f"func Compute{k}(values []int) int {{\n"
        f"\ttotal := 0\n\tfor _, v := range values {{\n\t\ttotal += v * {k + 1}\n\t}}\n\n"
        f"\tif total > 100 {{\n\t\treturn total - {k}\n\t}}\n\treturn total + {k}\n}}"
        for k in range(3)
    ],
    "java": [
        f"class Worker{k} {{\n"
        f"    private final int weight = {k + 3};\n\n"
        f"    int run(int[] values) {{\n        int total = 0;\n"
        f"        for (int v : values) {{ total += v * weight; }}\n"
        f"        return total;\n    }}\n}}"
        for k in range(3)
    ],
    "c": [
        f"int compute_{k}(const int *values, int n) {{\n"
        f"    int total = 0;\n    for (int i = 0; i < n; i++) {{ total += values[i]; }}\n\n"
        f"    if (total > 100) {{ return total - {k}; }}\n    return total * {k + 2};\n}}"
        for k in range(3)
    ],
    "cpp": [
        f"template <typename T> T compute_{k}(const std::vector<T>& values) {{\n"
        f"    T total{{}};\n    for (const auto& v : values) {{ total += v; }}\n\n"
        f"    return total * static_cast<T>({k + 2});\n}}"
        for k in range(3)
    ],
    "javascript": [
        f"function compute{k}(values) {{\n"
        f"  const total = values.reduce((a, b) => a + b, 0);\n\n"
        f"  const label = `run {k}: ${{values.length}} values`;\n"
        f"  return {{ total: total * {k + 2}, label }};\n}}"
        for k in range(3)
    ],
    "typescript": [
        f"export function compute{k}(values: number[]): {{ total: number; label: string }} {{\n"
        f"  const total: number = values.reduce((a, b) => a + b, 0);\n\n"
        f"  return {{ total: total * {k + 2}, label: `run {k}` }};\n}}"
        for k in range(3)
    ],
    "tsx": [
        f"export function Panel{k}(props: {{ items: string[] }}): JSX.Element {{\n"
        f"  const count: number = props.items.length + {k};\n\n"
        f"  return <div className=\"panel-{k}\">{{props.items.join(', ')}} ({{count}})</div>;\n}}"
        for k in range(3)
    ],
    "toml": [
        f'[server_{k}]\nhost = "host-{k}.example.com"\nport = {8000 + k}\n\n'
        f'timeout_seconds = {30 + k}\nretries = {k + 1}\nlabels = ["a{k}", "b{k}", "c{k}"]'
        for k in range(3)
    ],
    "yaml": [
        f"service_{k}:\n  image: registry.example.com/service-{k}:latest\n  replicas: {k + 1}\n\n"
        f"  env:\n    LOG_LEVEL: debug\n    WORKER_ID: worker-{k}\n"
        f"  ports: [{8000 + k}, {9000 + k}]"
        for k in range(3)
    ],
    "json": [
        f'  "service_{k}": {{\n    "image": "registry.example.com/service-{k}:latest",\n\n'
        f'    "replicas": {k + 1},\n    "env": {{"LOG_LEVEL": "debug", "WORKER": "w-{k}"}}\n  }}'
        for k in range(3)
    ],
}


def items_document(language: str) -> str:
    items = ITEMS[language]
    if language == "json":
        return "{\n" + ",\n".join(items) + "\n}\n"
    return "\n".join(items) + "\n"


def has_grammar(language: str) -> bool:
    info = resolve_language(language)
    return info is not None and load_tree_sitter_language(info) is not None


@pytest.mark.parametrize("language", sorted(ITEMS))
def test_syntax_aware_splitting_cuts_between_items(
    splitter: RecursiveSplitter, language: str
) -> None:
    if not has_grammar(language):
        pytest.skip(f"no tree-sitter grammar for {language} is installed (offline)")
    text = items_document(language)
    items = ITEMS[language]
    chunk_size = max(nbytes(item) for item in items) + 8
    assert nbytes(items[0]) + nbytes(items[1]) > chunk_size
    chunks = splitter.split(text, chunk_size, language=language)
    check_chunks(text, chunks, chunk_size)
    for item in items:
        item = item.strip()
        assert any(item in c.text for c in chunks), (item[:30], [c.text[:30] for c in chunks])
    # The control: without the grammar the same text is cut inside the items.
    plain = splitter.split(text, chunk_size)
    assert not all(any(item.strip() in c.text for c in plain) for item in items)


def test_real_code_splitter_source(splitter: RecursiveSplitter) -> None:
    # The splitter's own modules as one file (their future imports dropped: one per file).
    text = "\n\n".join(
        p.read_text(encoding="utf-8").replace("from __future__ import annotations\n", "")
        for p in SPLITTER_SOURCES
    )
    for language in ("python", ".py", None):
        chunks = splitter.split(text, 1500, chunk_overlap=300, language=language)
        check_chunks(text, chunks, 1500, overlap=300)
    # Top-level statements (with their decorators), found by Python's own parser.
    lines = text.splitlines(keepends=True)
    blocks = []
    for node in ast.parse(text).body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        blocks.append("".join(lines[first - 1 : node.end_lineno]).strip())
    fitting = [block for block in blocks if nbytes(block) <= 1500]
    assert len(fitting) > 20
    chunks = splitter.split(text, 1500, language="python")
    whole = [block for block in fitting if any(block in c.text for c in chunks)]
    # A definition that fits a chunk is almost never cut (size limits force a rare one).
    assert len(whole) >= 0.9 * len(fitting), [b[:40] for b in fitting if b not in whole]


# --- custom languages ----------------------------------------------------------------------


def test_custom_language_separators(splitter: RecursiveSplitter) -> None:
    custom = RecursiveSplitter(
        [CustomLanguage("records", [r"\n%%\n", r"\n"], aliases=["rec", "Records-V2"])]
    )
    records = [f"record {k}\nfield a = {k}\nfield b = {k * 2}" for k in range(12)]
    text = "\n%%\n".join(records)
    for language in ("records", "REC", "records-v2"):
        chunks = custom.split(text, 80, language=language)
        check_chunks(text, chunks, 80, covers_all=False)
        # Cut at record separators only: every chunk is whole records.
        assert all(set(c.text.split("\n%%\n")) <= set(records) for c in chunks), chunks
    # Other languages are not affected by the custom entry.
    assert custom.split(text, 80) == splitter.split(text, 80)


def test_custom_language_with_empty_name_is_the_default(splitter: RecursiveSplitter) -> None:
    custom = RecursiveSplitter([CustomLanguage("", [r"\|"])])
    text = "|".join(f"cell{k}" for k in range(40))
    chunks = custom.split(text, 30)
    check_chunks(text, chunks, 30, covers_all=False)
    # Cut only at separators: every chunk is whole cells.
    assert all(re.fullmatch(r"cell\d+(\|cell\d+)*", c.text) for c in chunks), chunks
    # Plain text has no separator here and cuts cells in two.
    plain = splitter.split(text, 30)
    assert not all(re.fullmatch(r"cell\d+(\|cell\d+)*", c.text) for c in plain)


def test_custom_language_without_separators_is_cut(splitter: RecursiveSplitter) -> None:
    custom = RecursiveSplitter([CustomLanguage("blob", [r"\n\n"])])
    text = "y" * 5000
    chunks = custom.split(text, 1000, language="blob")
    check_chunks(text, chunks, 1000)


@pytest.mark.parametrize(
    ("languages", "duplicate"),
    [
        ([CustomLanguage("Foo", []), CustomLanguage("foo", [])], "foo"),
        ([CustomLanguage("a", [], aliases=["X"]), CustomLanguage("b", [], aliases=["x"])], "x"),
        ([CustomLanguage("same", [], aliases=["SAME"])], "SAME"),
    ],
)
def test_duplicate_custom_names_are_rejected(
    languages: list[CustomLanguage], duplicate: str
) -> None:
    with pytest.raises(ValueError, match=f"duplicate.*'{duplicate}'"):
        RecursiveSplitter(languages)


def test_bad_custom_regex_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("'(unclosed'")):
        RecursiveSplitter([CustomLanguage("bad", [r"\n", "(unclosed"])])


# --- random text ---------------------------------------------------------------------------

ALPHABET = st.sampled_from(
    [*list("abcdefgh  \n\n\t.,;:-!?#`"), "。", "，", "é", "😀", "—", "\u3000", "```\n", "## "]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(ALPHABET, max_size=400).map("".join),
    chunk_size=st.integers(min_value=1, max_value=120),
    min_chunk_size=st.none() | st.integers(min_value=0, max_value=150),
    chunk_overlap=st.none() | st.integers(min_value=0, max_value=80),
    language=st.sampled_from([None, "markdown", "python", "json"]),
)
def test_random_text_invariants(
    text: str,
    chunk_size: int,
    min_chunk_size: int | None,
    chunk_overlap: int | None,
    language: str | None,
) -> None:
    splitter = RecursiveSplitter()
    chunks = splitter.split(text, chunk_size, min_chunk_size, chunk_overlap, language)
    min_size = chunk_size // 2 if min_chunk_size is None else min_chunk_size
    check_chunks(text, chunks, chunk_size, overlap=min(chunk_overlap or 0, min_size))
    # Deterministic: the same input gives the same chunks.
    assert splitter.split(text, chunk_size, min_chunk_size, chunk_overlap, language) == chunks


def test_dense_atoms_are_packed_to_bound_the_merge(splitter: RecursiveSplitter) -> None:
    # 200,000 two-letter words: v0 makes every word an atom and its merge looks back over
    # ~700 atoms per atom; cocod packs such dense runs, so a chunk spans a bounded number.
    text = "ab cd " * 100_000
    doc = Text(text)
    atoms = collect_atoms(doc, None, DEFAULT_SEPARATORS, 500, 2000)
    assert len(atoms.starts) <= 2 * 32 * doc.nbytes // 2000 + 2, len(atoms.starts)
    chunks = splitter.split(text, 2000, chunk_overlap=500)
    check_chunks(text, chunks, 2000, overlap=500)
    # Ordinary prose is not packed: every sentence-sized piece stays an atom of its own.
    prose_text = prose(40, 6)
    prose_atoms = collect_atoms(Text(prose_text), None, DEFAULT_SEPARATORS, 100, 400)
    pieces = [p for p in re.split(r"[.?!]\s+|\n\n+|\n", prose_text) if p.strip()]
    assert len(prose_atoms.starts) - 1 == len(pieces)
