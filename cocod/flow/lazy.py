"""Lazy re-exports for a package's ``__init__``: a name is imported from its module on
first use.

``cocod`` and ``cocod.flow`` re-export names whose modules are expensive (the runtime
pulls in asyncpg) or sit in a layer above (``cocod.flow`` must not import the runtime
when the engine imports it). Both resolve names the same way, so the mechanism is written
once: a table of ``name → defining module``, a module ``__getattr__`` (PEP 562) that
imports the module, caches the value in the package's namespace and returns it, and a
``__dir__`` that lists the names before they are resolved. It imports nothing of cocod.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing stays unloaded: the thin CLI imports this via `cocod`
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import Any


class LazyExports:
    """The lazily resolved names of one package."""

    def __init__(
        self, package: str, names: Mapping[str, str], submodules: Collection[str] = ()
    ) -> None:
        self._package = package
        self._names = dict(names)
        self._submodules = frozenset(submodules)

    def attribute(self, name: str) -> Any:
        """The package's ``__getattr__``: called only for names not yet in its namespace."""
        import importlib  # here: the thin CLI imports cocod but never resolves a name

        if name in self._submodules:
            return importlib.import_module(f"{self._package}.{name}")
        module = self._names.get(name)
        if module is None:
            raise AttributeError(f"module {self._package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[self._package])[name] = value  # later uses skip __getattr__
        return value

    def dir(self) -> list[str]:
        """The package's ``__dir__``: its namespace plus every name it can resolve."""
        namespace = vars(sys.modules[self._package])
        return sorted({*namespace, *self._submodules, *self._names})
