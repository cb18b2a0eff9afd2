"""`SplitRecursively` gives CocoIndex 0.3.39's chunks: expected outputs written out literally.

Each expectation below is what CocoIndex 0.3.39's ``SplitRecursively`` returned for the same
input and arguments (run through ``bench/splitter_parity.py``'s CocoIndex script); these
tests need no CocoIndex.  Each case pins one v0 rule cocod used to get wrong:

* a chunk keeps its first line's indentation (atoms start at the beginning of their line),
* separator punctuation at a chunk boundary is left out (". " ends a piece, "。" too),
* boundaries are ranked by stack depth and the cost model (a heading or a top-level item is
  preferred to a blank line inside a section or a function),
* overlap follows v0's candidate heap, and markdown is split along its tree-sitter tree
  (fenced code blocks are terminal).
"""

from __future__ import annotations

import pytest

from cocod.executors.languages import load_tree_sitter_language, resolve_language
from cocod.executors.splitter import CustomLanguage, RecursiveSplitter, TextPosition

PROSE = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu. Nu xi omicron."

# name: (text, language, chunk_size, min_chunk_size, chunk_overlap, [(start, end, text)])
CASES: dict[str, tuple[str, str | None, int, int, int, list[tuple[int, int, str]]]] = {
    "sentence_ends": (
        PROSE,
        None,
        40,
        10,
        0,
        [
            (0, 36, "Alpha beta gamma. Delta epsilon zeta"),
            (38, 69, "Eta theta iota. Kappa lambda mu"),
            (71, 85, "Nu xi omicron."),
        ],
    ),
    "overlap": (
        PROSE + " Pi rho sigma. Tau upsilon phi.",
        None,
        50,
        25,
        20,
        [
            (0, 36, "Alpha beta gamma. Delta epsilon zeta"),
            (38, 84, "Eta theta iota. Kappa lambda mu. Nu xi omicron"),
            (86, 116, "Pi rho sigma. Tau upsilon phi."),
        ],
    ),
    "indentation": (
        "def f():\n    a = 1\n    b = 2\n\n    return a + b\n\nclass C:\n    x = 1\n    y = 2\n",
        None,
        30,
        10,
        0,
        [
            (0, 28, "def f():\n    a = 1\n    b = 2"),
            (30, 46, "    return a + b"),
            (48, 76, "class C:\n    x = 1\n    y = 2"),
        ],
    ),
    "markdown": (
        "# Title\n\nIntro text here.\n\n## One\n\nFirst section body, a sentence.\n\n"
        "```python\n# not a heading\nx = 1\n```\n\n## Two\n\n"
        "Second section: more words here, and more.\n",
        "markdown",
        80,
        20,
        0,
        [
            (0, 25, "# Title\n\nIntro text here."),
            (
                27,
                103,
                "## One\n\nFirst section body, a sentence.\n\n"
                "```python\n# not a heading\nx = 1\n```",
            ),
            (105, 155, "## Two\n\nSecond section: more words here, and more."),
        ],
    ),
    "markdown_overlap": (
        "# Title\n\nIntro text here.\n\n## One\n\n"
        "First section body, a sentence. Another one follows it.\n\n## Two\n\n"
        "Second section: more words here, and more.\n",
        "markdown",
        60,
        30,
        15,
        [
            (0, 33, "# Title\n\nIntro text here.\n\n## One"),
            (35, 90, "First section body, a sentence. Another one follows it."),
            (92, 142, "## Two\n\nSecond section: more words here, and more."),
        ],
    ),
    "python": (
        "import os\n\n\ndef handler(event):\n    total = sum(event.values())\n"
        "    if total > 10:\n        return total\n    return 0\n\n\n"
        "class Box:\n    def size(self):\n        return 4\n",
        "python",
        60,
        20,
        0,
        [
            (0, 31, "import os\n\n\ndef handler(event):"),
            (32, 63, "    total = sum(event.values())"),
            (64, 116, "    if total > 10:\n        return total\n    return 0"),
            (119, 166, "class Box:\n    def size(self):\n        return 4"),
        ],
    ),
    "cjk_bytes": (
        "这是一个句子。" * 6,
        None,
        45,
        22,
        0,
        [
            (0, 13, "这是一个句子。这是一个句子"),
            (14, 27, "这是一个句子。这是一个句子"),
            (28, 41, "这是一个句子。这是一个句子"),
        ],
    ),
    "crlf": (
        "line one\r\nline two\r\n\r\nline three is longer\r\nfour",
        None,
        20,
        5,
        0,
        [(0, 18, "line one\r\nline two"), (22, 35, "line three is"), (36, 48, "longer\r\nfour")],
    ),
    "min_chunk_size": (
        "aa bb cc dd ee ff gg hh ii jj kk ll mm nn",
        None,
        12,
        9,
        0,
        [
            (0, 11, "aa bb cc dd"),
            (12, 23, "ee ff gg hh"),
            (24, 35, "ii jj kk ll"),
            (36, 41, "mm nn"),
        ],
    ),
}

# Start and end (line, column) of each chunk, as v0 reported them, for the cases with lines.
POSITIONS: dict[str, list[tuple[tuple[int, int], tuple[int, int]]]] = {
    "indentation": [((1, 1), (3, 10)), ((5, 1), (5, 17)), ((7, 1), (9, 10))],
    "markdown": [((1, 1), (3, 17)), ((5, 1), (12, 4)), ((14, 1), (16, 43))],
    "python": [((1, 1), (4, 20)), ((5, 1), (5, 32)), ((6, 1), (8, 13)), ((11, 1), (13, 17))],
    "crlf": [((1, 1), (2, 9)), ((4, 1), (4, 14)), ((4, 15), (5, 5))],
    "cjk_bytes": [((1, 1), (1, 14)), ((1, 15), (1, 28)), ((1, 29), (1, 42))],
}


def needs_grammar(language: str | None) -> None:
    if language is None:
        return
    info = resolve_language(language)
    if info is None or load_tree_sitter_language(info) is None:
        pytest.fail(f"the {language} grammar (tree-sitter-language-pack) is not installed")


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunks_are_cocoindex_0_3_39s(name: str) -> None:
    text, language, chunk_size, min_chunk_size, overlap, expected = CASES[name]
    needs_grammar(language)
    chunks = RecursiveSplitter().split(text, chunk_size, min_chunk_size, overlap, language)
    assert [(c.location[0], c.location[1], c.text) for c in chunks] == expected
    for chunk in chunks:
        assert text[chunk.location[0] : chunk.location[1]] == chunk.text
    if name in POSITIONS:
        assert [
            ((c.start.line, c.start.column), (c.end.line, c.end.column)) for c in chunks
        ] == POSITIONS[name]
        assert all(c.start.offset == c.location[0] for c in chunks)


def test_v0_unit_test_example() -> None:
    # v0's own unit test (rust/ops_text/src/split/recursive.rs, test_split_basic).
    chunks = RecursiveSplitter().split("Linea 1.\nLinea 2.\n\nLinea 3.", 15, 5, 0)
    assert [c.text for c in chunks] == ["Linea 1.", "Linea 2.", "Linea 3."]
    assert [c.start for c in chunks] == [
        TextPosition(0, 1, 1),
        TextPosition(9, 2, 1),
        TextPosition(19, 4, 1),
    ]


def test_custom_language_separators_are_left_out_at_boundaries() -> None:
    # A custom separator's match is dropped at a chunk boundary and kept inside a chunk.
    splitter = RecursiveSplitter([CustomLanguage("cells", [r"\|"])])
    text = "|".join(f"cell{k}" for k in range(8))
    chunks = splitter.split(text, 20, 5, 0, "cells")
    assert [c.text for c in chunks] == ["cell0|cell1|cell2", "cell3|cell4|cell5", "cell6|cell7"]
