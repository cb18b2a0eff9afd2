"""sentence-transformers is imported with scikit-learn's metrics deferred, and correctly.

Each case runs in a fresh interpreter: the test process may have imported either
package already, and the point is what one import leaves in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _fresh(code: str, *, path: Path | None = None) -> dict[str, object]:
    """The JSON object that ``code`` prints last, run in a fresh interpreter."""
    env_path = [str(path)] if path else []
    prelude = f"import sys; sys.path[:0] = {env_path!r}\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return out


def test_loading_the_model_leaves_scikit_learn_unimported() -> None:
    out = _fresh(
        """
        import json, sys
        from cocod.executors.embedder import load_model
        model = load_model("sentence-transformers/all-MiniLM-L6-v2")
        vector = model.encode(["one sentence"])[0]
        print(json.dumps({
            "dims": len(vector),
            "sklearn": sorted(m for m in sys.modules if m.split(".")[0] == "sklearn"),
        }))
        """
    )
    assert out == {"dims": 384, "sklearn": []}


def test_the_deferred_function_imports_the_real_one_when_called() -> None:
    out = _fresh(
        """
        import json, sys
        import numpy as np
        from cocod.executors.lean_import import import_sentence_transformers
        import_sentence_transformers()
        from sentence_transformers.util import similarity
        a, b = np.array([[0.0, 1.0], [2.0, 2.0]]), np.array([[1.0, 1.0]])
        deferred = similarity.pairwise_distances(a, b, metric="manhattan").tolist()
        from sklearn.metrics import pairwise_distances
        real = pairwise_distances(a, b, metric="manhattan").tolist()
        print(json.dumps({
            "deferred": deferred,
            "real": real,
            "later_import_is_real": type(sys.modules["sklearn.metrics"]).__name__,
        }))
        """
    )
    assert out["deferred"] == out["real"] == [[1.0], [2.0]]
    assert out["later_import_is_real"] == "module"


def test_an_already_imported_scikit_learn_is_used_as_it_is() -> None:
    out = _fresh(
        """
        import json
        import sklearn.metrics
        from cocod.executors.lean_import import import_sentence_transformers
        import_sentence_transformers()
        from sentence_transformers.util import similarity
        print(json.dumps(
            {"same": similarity.pairwise_distances is sklearn.metrics.pairwise_distances}
        ))
        """
    )
    assert out == {"same": True}


def _packages(root: Path, importer: str) -> Path:
    """A package ``dep`` (with ``dep.metrics``) and a module ``user`` importing it."""
    (root / "dep" / "metrics").mkdir(parents=True)
    (root / "dep" / "__init__.py").write_text("IMPORTED = True\n")
    (root / "dep" / "metrics" / "__init__.py").write_text(
        "def helper(x):\n    return x + 1\n\nclass Base:\n    pass\n"
    )
    (root / "dep" / "metrics" / "sub.py").write_text("VALUE = 7\n")
    (root / "user.py").write_text(importer)
    return root


@pytest.mark.parametrize(
    ("importer", "deferred"),
    [
        ("from dep.metrics import helper\n", True),
        # A base class cannot be a forwarder, nor can a submodule come from a stand-in:
        # both fall back to the plain import, which then works.
        ("from dep.metrics import Base\nclass Mine(Base):\n    pass\n", False),
        ("import dep.metrics.sub\n", False),
    ],
    ids=["function", "base-class", "submodule"],
)
def test_an_import_that_needs_more_than_functions_falls_back(
    tmp_path: Path, importer: str, deferred: bool
) -> None:
    out = _fresh(
        """
        import json, sys
        from cocod.executors.lean_import import import_deferring
        user = import_deferring("user", "dep.metrics")
        helper = getattr(user, "helper", None)
        print(json.dumps({
            "dep_imported": "dep" in sys.modules,
            "helper": helper(1) if helper else None,
            "stand_in_left": type(sys.modules.get("dep.metrics")).__name__,
        }))
        """,
        path=_packages(tmp_path, importer),
    )
    assert out["dep_imported"] is not deferred
    if deferred:
        assert out["helper"] == 2  # the forwarder imported dep.metrics when called
    else:
        assert out["stand_in_left"] == "module"  # the real one, not the stand-in
