"""The declarative flow API: records a graph, does no I/O."""
