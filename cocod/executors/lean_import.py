"""Import sentence-transformers without the parts an embedder never runs.

Why: sentence-transformers imports scikit-learn at its top level, for one function
(``sklearn.metrics.pairwise_distances``) that only its similarity helpers call. Measured
with sentence-transformers 6.2 and scikit-learn 1.9, that import costs about 40 MB of
resident memory for the process's life and 0.75 s of each model load (the import of
sentence-transformers takes 2.7 s with it, 2.0 s without). So the import runs
with a stand-in for ``sklearn.metrics``: each name taken from it is a forwarder that
imports the real module on its first call. The stand-in leaves ``sys.modules`` as soon as
the import is over, so later imports of scikit-learn anywhere in the process get the real
package.

Where it cannot work (scikit-learn already imported, a version that takes more than
functions from it, a submodule import), the import falls back to a plain one: the
partly imported modules are forgotten and imported again with nothing deferred. One
window stays: another thread that imports ``sklearn.metrics`` during those two seconds
gets the stand-in too, whose functions still work when called.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

SKLEARN_METRICS = "sklearn.metrics"
"""What sentence-transformers imports eagerly and an embedder never uses."""

_lock = threading.Lock()


class _Forwarder:
    """Stands for ``<module>.<name>``; imports the module on the first call."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name
        self._target: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._target is None:
            self._target = getattr(importlib.import_module(self._module), self._name)
        return self._target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


class _StandIn(types.ModuleType):
    """A module whose public names are forwarders; anything else is missing, so that an
    import needing more (a submodule, a base class) fails and the plain import runs."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Forwarder(self.__name__, name)


def import_sentence_transformers() -> types.ModuleType:
    """``sentence_transformers``, imported with scikit-learn's metrics deferred."""
    return import_deferring("sentence_transformers", SKLEARN_METRICS)


def import_deferring(module: str, deferred: str) -> types.ModuleType:
    """``module``, imported while ``deferred`` is a stand-in whose functions import the
    real one when first called; a plain import where that cannot work."""
    with _lock:
        loaded = sys.modules.get(module)
        if loaded is not None:
            return loaded
        if deferred in sys.modules:
            return importlib.import_module(module)
        before = set(sys.modules)
        stand_in = _StandIn(deferred)
        sys.modules[deferred] = stand_in
        try:
            return importlib.import_module(module)
        except Exception:
            _forget_imported_since(before, stand_in, (module, deferred))
            return importlib.import_module(module)
        finally:
            if sys.modules.get(deferred) is stand_in:
                del sys.modules[deferred]


def _forget_imported_since(
    before: set[str], stand_in: types.ModuleType, packages: tuple[str, ...]
) -> None:
    """Drop what the failed attempt imported of ``packages``, which may hold the
    stand-in, so that the plain import builds it again; what was there before stays."""
    if sys.modules.get(stand_in.__name__) is stand_in:
        del sys.modules[stand_in.__name__]
    tops = {name.split(".")[0] for name in packages}
    for name in set(sys.modules) - before:
        if name.split(".")[0] in tops:
            del sys.modules[name]
