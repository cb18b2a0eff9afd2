"""The compiled helper (``cocod/_native.c``), or None where it was not built.

Why optional: it only speeds up loops that run once per file in every full pass (the
stat() walk, the listing's comparison with the tracking); each has a Python version that
gives the same answers. ``pip install`` builds it where a C compiler is present (setup.py);
``COCOD_NATIVE=0`` switches it off, to compare the two or to rule it out.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("COCOD_NATIVE") == "0":
        return None
    try:
        return importlib.import_module("cocod._native")  # typed as a module: built or not
    except ImportError:
        return None


HELPER = _load()
