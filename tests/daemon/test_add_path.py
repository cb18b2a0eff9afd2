"""`cocod add NAME --path DIR [--flow code|text] [--on-demand]`: an instance of a built-in
flow with no Python written, searchable at once (the real bundled model, in the daemon)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually

NOTE = "# Garden\n\nTomatoes need full sun\nand deep watering twice a week.\n"
CODE = (
    "def greet(name):\n"
    '    """Say hello."""\n'
    '    return f"hello {name}"\n'
    "\n\n"
    "def parse_config(path):\n"
    '    """Read the TOML configuration file."""\n'
    "    return open(path).read()\n"
)


def test_add_with_a_path_indexes_the_folder_with_a_built_in_flow(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "notes" / "garden.md", NOTE)
    write(tmp_path / "repo" / "src" / "app.py", CODE)
    daemon = DaemonProcess(tmp_path, database_url, "").start()
    try:
        # A relative path is resolved by the client, where the user is (cwd: tmp_path).
        added = json.loads(daemon.cli("add", "notes", "--path", "notes", "--json").stdout)
        assert added["definition"] == "cocod.flows:text"
        assert added["params"]["path"] == str(tmp_path / "notes")
        added = daemon.json(
            "add", "repo", "--path", str(tmp_path / "repo"), "--flow", "code", "--on-demand"
        )
        assert added["definition"] == "cocod.flows:code" and added["params"]["table"]
        listing = {r["name"]: r for r in daemon.json("ls")}
        assert listing["notes"]["live"] is True and listing["repo"]["live"] is False
        assert listing["repo"]["origin"] == "runtime"

        eventually(lambda: daemon.state("notes") == "WATCHING", "notes to watch", timeout=240)
        daemon.cli("update", "repo")  # an on-demand instance: set up on open, then indexed

        result = daemon.json("search", "how often should tomatoes be watered", "--top", "5")
        assert result["searched"] == ["notes", "repo"]
        best = result["results"][0]
        assert (best["instance"], best["filename"]) == ("notes", "garden.md")
        assert best["start_line"] >= 1 and best["end_line"] >= best["start_line"]
        code = daemon.json("search", "read the configuration file", "--instance", "repo")
        hit = code["results"][0]
        assert hit["filename"] == "src/app.py" and "parse_config" in hit["text"]
        first = CODE[: CODE.index(hit["text"])].count("\n") + 1
        assert (hit["start_line"], hit["end_line"]) == (
            first,
            first + hit["text"].count("\n"),
        )

        for args, words in (
            (("add", "bad", "--path", str(tmp_path / "missing")), "not a folder"),
            (("add", "both", "mod:factory", "--path", str(tmp_path)), "not both"),
            (("add", "neither"), "--path"),
            (("add", "odd", "--path", str(tmp_path), "--flow", "poetry"), "code, text"),
            (("add", "notes", "--path", str(tmp_path / "notes")), "already exists"),
        ):
            refused = daemon.cli(*args, check=False)
            assert refused.returncode == 1 and words in refused.stderr, (args, refused.stderr)
    finally:
        daemon.stop()
