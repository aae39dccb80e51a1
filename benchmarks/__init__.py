"""Benchmarks of resattn: throughput and memory tables, library and training-loop comparisons (BENCHMARKS.md).

Entry point: ``python -m benchmarks.run`` (``--help`` for the sections, variants, sizes and modes).
"""
