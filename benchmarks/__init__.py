"""Benchmarks of resattn: throughput and memory tables, library and training-loop comparisons (BENCHMARKS.md).

Entry point: ``python -m benchmarks.run`` (``--help`` for the sections, variants, sizes and modes). The parts:
``settings`` (the options), ``runner`` (a fresh process per measurement, retries), ``sections`` (one module per
section: how it measures, its table and its goals), ``document`` (the results folder and the document made from
it); the workers ``measure`` and ``loops`` time networks and training loops in their own processes (``worker``).
"""
