"""Probe the syntax tasks of a model, one (`--task`) or all:
`python -m probe.syntax --model runs/demo`.

Writes MODEL/analyses/probe.json (or `--out`) and its figure; see `probe.tasks` for what each
task reads."""

import sys

from probe.cli import main

if __name__ == "__main__":
    sys.exit(main("syntax"))
