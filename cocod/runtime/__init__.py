"""The Flow handle and its lifecycle; wires engine, executors and storage together."""
