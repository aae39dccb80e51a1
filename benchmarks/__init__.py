"""Benchmarks of resattn: throughput and memory tables, library and training-loop comparisons (BENCHMARKS.md).

``python -m benchmarks.run`` measures (:mod:`.run`: the sections as groups of cases; :mod:`.worker`: the case type,
the timing loop and the fresh process each group runs in; :mod:`.pipelines`: the data the cases read) and writes
one CSV record per section; ``python -m benchmarks.render`` turns the records into Markdown and plots.
"""
