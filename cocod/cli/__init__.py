"""The ``cocod`` command line: argument parsing and rendering only."""
