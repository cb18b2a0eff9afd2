"""The banded merge chooses exactly the chunks of the plain look-back loop.

Why: ``merge_banded`` prices each settled start once and skips groups of starts by a lower
bound; any slip in a tie-break or in the settled/unsettled split would change chunks (and
so the v0 parity) only on some inputs.  Random atoms (synthetic ones, with atoms longer than
the overlap or than a chunk, and ones walked from random text) exercise every path.
"""

from __future__ import annotations

import random
import subprocess
import sys

from cocod.executors.splitting import merge_banded as banded
from cocod.executors.splitting.atoms import Atoms, collect_atoms
from cocod.executors.splitting.merging import merge, merge_plain
from cocod.executors.splitting.separators import DEFAULT_SEPARATORS
from cocod.executors.splitting.text import Text


def synthetic_atoms(rng: random.Random, n: int) -> Atoms:
    """``n`` atoms in order with random gaps, lengths, levels and line breaks."""
    pos = 0
    spans = []
    for _ in range(n):
        pos += rng.choice([0, 0, 1, 2, 5, 30])
        length = rng.choice([1, 3, 8, 20, 40, 90, 200])
        spans.append((pos, pos + length))
        pos += length
    text = Text("x" * (pos + rng.choice([0, 4])))
    atoms = Atoms(text, 1 << 30)
    for start, end in spans:
        atoms.starts.append(start)
        atoms.ends.append(end)
        atoms.levels.append(rng.randint(0, 6))
        atoms.inner_breaks.append(rng.choice([0, 0, 1, 2]))
        atoms.boundary_breaks.append(rng.choice([0, 1, 1, 2]))
    atoms._lowest = rng.randint(0, 3)
    atoms.finish()
    return atoms


def sizes(rng: random.Random) -> tuple[int, int, int]:
    chunk_size = rng.randint(5, 400)
    min_size = rng.randint(0, chunk_size + 20)
    overlap = rng.choice([0, rng.randint(0, min_size), min_size])
    return chunk_size, min_size, min(overlap, min_size)


def test_synthetic_atoms_merge_alike() -> None:
    rng = random.Random(20261201)
    for _ in range(1200):
        atoms = synthetic_atoms(rng, rng.randint(0, 120))
        chunk_size, min_size, overlap = sizes(rng)
        expected = merge_plain(atoms, chunk_size, min_size, overlap)
        assert banded.merge_banded(atoms, chunk_size, min_size, overlap) == expected


def test_walked_atoms_merge_alike() -> None:
    rng = random.Random(7)
    pieces = ["word ", "a, ", "longer words here. ", "\n", "\n\n", "\t", "é", "x" * 60]
    for _ in range(150):
        text = Text("".join(rng.choice(pieces) for _ in range(rng.randint(0, 600))))
        chunk_size, min_size, overlap = sizes(rng)
        atom_size = overlap or min_size
        if atom_size <= 0:
            continue
        atoms = collect_atoms(text, None, DEFAULT_SEPARATORS, atom_size, chunk_size)
        expected = merge_plain(atoms, chunk_size, min_size, overlap)
        assert banded.merge_banded(atoms, chunk_size, min_size, overlap) == expected
        assert merge(atoms, chunk_size, min_size, overlap) == expected


def test_out_of_order_offsets_fall_back_to_the_plain_loop() -> None:
    atoms = synthetic_atoms(random.Random(3), 40)
    atoms.ends[10], atoms.ends[11] = atoms.ends[11], atoms.ends[10]
    assert banded.merge_banded(atoms, 100, 50, 20) is None
    assert merge(atoms, 100, 50, 20) == merge_plain(atoms, 100, 50, 20)


def test_the_split_worker_does_not_load_numpy() -> None:
    """A split worker process per CPU: numpy would add about 13 MB to each."""
    code = "import sys, cocod.executors.splitting.worker; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
