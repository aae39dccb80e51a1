"""Benchmarks of resattn: throughput and memory tables, library and training-loop comparisons (BENCHMARKS.md).

``python -m benchmarks.run`` measures (:mod:`.sections`: which cases, grouped how; :mod:`.cases`: the case type and
what it times; :mod:`.worker`: the timing loop and the fresh process; :mod:`.pipelines`: the data) and writes one CSV
record per section; ``python -m benchmarks.render`` turns the records (:mod:`.records`) into Markdown and plots.
"""
