"""Probe the semantics tasks of a model, one (`--task`) or all:
`python -m probe.semantics --model runs/demo`.

Writes MODEL/analyses/probe.json (or `--out`) and its figure; see `probe.tasks` for what each
task reads."""

import sys

from probe.cli import main

if __name__ == "__main__":
    sys.exit(main("semantics"))
