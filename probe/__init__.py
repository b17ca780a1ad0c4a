"""What a model represents: per-layer probes for syntax, semantics and facts with control
tasks, baselines and intervals.

- `probe.tasks`: the tasks and the rows they read; `probe.rows`: word-final rows from memory
  or an activation file.
- `probe.fit`: all layers x folds x control probes fitted at once (L-BFGS linear, Adam MLP).
- `probe.stats`: folds by word type / person, control labels, cluster bootstrap, center of
  gravity.
- `probe.layers`: the analysis, probes at every layer (`LayersConfig`, `run`, `from_ref`,
  `summary`); `probe.figures` its figure; `probe.cli`: the flags of `workbench probe`.

Belief tests (what a model states about a fact, and changing it) are in `beliefs`.
"""
