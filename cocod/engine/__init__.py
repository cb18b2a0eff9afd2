"""Generic evaluation: plans, fingerprints, memoization, update passes, setup diffs.

The engine never imports a driver: sources, stores and targets reach it through the small
Protocols in :mod:`cocod.engine.interfaces`.
"""
