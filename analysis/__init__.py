"""Offline tools that read what training wrote (training never imports this package).

- ``python -m analysis.results``: the paper's tables from finished runs (``tables.yaml`` holds their layouts and
  the paper's numbers; :mod:`analysis.runs` finds and reads runs, :mod:`analysis.tables` builds the tables).
- ``python -m analysis.masks``: the attention-mask grid of a checkpoint.
- ``python -m analysis.probe``: the response probe of Fig. 4 (ARL vs NAL).
- :mod:`analysis.wandb_offline`: reading offline W&B logs without a server.
"""
