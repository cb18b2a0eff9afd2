"""Load a user's app (module name or ``path.py``) so its flows register themselves.

Unlike v0, a path is imported under its own module name, not as ``__main__``: an
``if __name__ == "__main__":`` block in a flow file does not run under ``cocod update``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from cocod.errors import AppLoadError, CocodError

__all__ = ["AppLoadError", "load_app", "split_flow_specifier"]


def split_flow_specifier(spec: str) -> tuple[str, str | None]:
    """``app.py:Flow`` → (``app.py``, ``Flow``); a bare target has no flow name."""
    target, sep, flow = spec.rpartition(":")
    if sep and flow.isidentifier() and target:
        return target, flow
    return spec, None


def load_app(target: str) -> ModuleType:
    is_path = os.sep in target or "/" in target or target.endswith(".py")
    try:
        if not is_path:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            return importlib.import_module(target)
        path = Path(target).resolve()
        if path.is_dir() and (path / "__init__.py").is_file():
            return _import_package(path)
        if not path.is_file():
            raise AppLoadError(f"app file {target!r} does not exist")
        name = f"cocod_app_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise AppLoadError(f"cannot import {target!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        return module
    except CocodError:
        raise
    except ModuleNotFoundError as e:
        raise AppLoadError(f"cannot import app {target!r}: {e}") from e


def _import_package(path: Path) -> ModuleType:
    """``./main/``: the package imported by its own name, its parent folder on the path
    (so its relative imports work) — how to name the app package ``main`` when a daemon
    instance is also called ``main``."""
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return importlib.import_module(path.name)
