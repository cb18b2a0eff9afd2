"""A git working tree for the built-in flow tests, and what git would track in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write

MAIN_PY = '''"""The app."""


def greet(name: str) -> str:
    return f"hello {name}"


class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def __call__(self, name: str) -> str:
        return f"{self.greeting} {name}"
'''

GUIDE_MD = "# Guide\n\nInstall it.\n\n## Usage\n\nRun `app greet`.\n"


def make_working_tree(root: Path) -> Path:
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / ".git" / "config", "[core]\n\tbare = false\n")
    write(root / ".git" / "description", "not a doc\n")
    write(root / ".git" / "hooks" / "pre-commit.sample", "#!/bin/sh\necho hook\n")
    write(root / ".gitignore", "build/\n*.log\n")
    write(root / "README.md", "# App\n\nGreets people.\n")
    write(root / "notes.txt", "plain text notes\n")
    write(root / "src" / "app" / "main.py", MAIN_PY)
    write(root / "src" / "app" / "util.ts", "export const one = 1;\n")
    write(root / "src" / "app" / "run.log", "a log line\n")
    write(root / "src" / "app" / "logo.png", "\x89PNG not text")
    write(root / "docs" / "guide.md", GUIDE_MD)
    write(root / "docs" / ".gitignore", "drafts/\n")
    write(root / "docs" / "drafts" / "wip.md", "# WIP\n")
    write(root / "build" / "gen.py", "GENERATED = True\n")
    write(root / "build" / "docs" / "api.md", "# API (generated)\n")
    write(root / "node_modules" / "left-pad" / "index.js", "module.exports = pad;\n")
    write(root / "node_modules" / "left-pad" / "README.md", "# left-pad\n")
    return root


CODE_FILES = [
    ".gitignore",
    "README.md",
    "docs/.gitignore",
    "docs/guide.md",
    "notes.txt",
    "src/app/main.py",
    "src/app/util.ts",
]
TEXT_FILES = ["README.md", "docs/guide.md", "notes.txt"]
BUILD_FILES = ["build/docs/api.md", "build/gen.py"]


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global git config or excludes from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
