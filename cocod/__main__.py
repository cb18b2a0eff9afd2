"""``python -m cocod``: the ``cocod`` command (what ``-X importtime -m cocod status`` profiles)."""

from __future__ import annotations

import sys

from cocod.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
