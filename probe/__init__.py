"""What a model represents: per-layer probes for syntax, semantics and facts with control
tasks, baselines and intervals (`probe.sweep.run_sweep`, `workbench probe`)."""
