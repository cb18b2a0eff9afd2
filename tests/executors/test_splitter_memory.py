"""The splitter's syntax parse keeps no memory per document.

tree-sitter 0.26.1's binding keeps a reference to every object a parse read callback returns;
the splitter once returned slices of each document and so kept every document it parsed
(515 MB peak over 50,000 files).  These tests parse thousands of distinct documents and bound
the growth of the process's resident memory, and check that the per-thread buffers the parse
now reads through give the same tree as parsing the bytes directly, also for a document larger
than the buffer with multi-byte characters across its edges.
"""

from __future__ import annotations

import resource
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tree_sitter

from cocod.executors.languages import load_tree_sitter_language, resolve_language
from cocod.executors.splitting import syntax


def _rss_mb() -> float:
    """Current resident memory (Linux), else the peak (which can only overstate growth)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        pages = int(statm.read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _shape(node: Any) -> list[tuple[int, int, int]]:
    out = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append((current.kind_id, current.start_byte, current.end_byte))
        stack.extend(reversed(current.children))
    return out


def test_parsing_thousands_of_documents_keeps_memory_flat() -> None:
    info = resolve_language("json")
    assert info is not None
    body = "a" * 100_000
    syntax.parse(info, f'["{body}", 0]'.encode())  # warm: grammar, parser, buffers
    before = _rss_mb()
    for i in range(3000):
        # A distinct 100 KB document each time: keeping them all would be 300 MB.
        tree = syntax.parse(info, f'["{body}", {i}]'.encode())
        assert tree is not None
    growth = _rss_mb() - before
    assert growth < 50, f"resident memory grew {growth:.0f} MB over 3,000 parses"


def test_buffered_reads_give_the_same_tree_as_parsing_bytes() -> None:
    for language, unit in (
        ("markdown", "# Été 😀\n\nUn paragraphe, 漢字 et des mots.\n\n- élément\n\n"),
        ("python", "def f(x):\n    return ['é😀漢', x]\n\n\nclass A:\n    y = 'ü'\n\n"),
    ):
        info = resolve_language(language)
        assert info is not None
        grammar = load_tree_sitter_language(info)
        # Larger than the read buffer, so reads are cut, some inside a multi-byte character.
        for repeat in (1, 7, 1500):
            encoded = (unit * repeat + "tail").encode()
            tree = syntax.parse(info, encoded)
            assert tree is not None
            direct = tree_sitter.Parser(grammar).parse(encoded)
            assert _shape(tree.root) == _shape(direct.root_node), (language, repeat)


def test_threads_parsing_at_once_get_their_own_documents_trees() -> None:
    """Each thread reads through its own buffer: parses racing in threads see only their own
    document (the splitter may serve several threads, see ``RecursiveSplitter``)."""
    info = resolve_language("python")
    assert info is not None
    grammar = load_tree_sitter_language(info)
    documents = [
        (f"def f{i}(x):\n    return '{'é' * i}' + x\n\n" * (50 + 40 * i)).encode() for i in range(8)
    ]
    expected = [_shape(tree_sitter.Parser(grammar).parse(d).root_node) for d in documents]

    def work(k: int) -> bool:
        for _ in range(5):
            for j in range(len(documents)):
                index = (j + k) % len(documents)
                tree = syntax.parse(info, documents[index])
                if tree is None or _shape(tree.root) != expected[index]:
                    return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, range(4)))
