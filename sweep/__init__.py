"""Scaling sweeps: families of models trained on the world, and the laws they follow.

What lives where:

- `spec.py`: `SweepSpec`, a family described as data (a TOML or JSON spec file, or a preset of
  `datasets/sweeps/`: `micro`, `cpu`, `emergence`, `gpu`); `load_spec`;
- `member.py`: a `Member` (size n_layers x d_model x n_heads, steps, seed, mixture knobs), its
  non-embedding parameters N, tokens D and compute C = 6ND;
- `plan.py`: `plan_sweep` writes a plan directory (one directory and one command per member);
  `load_plan` reads it;
- `run.py`: `train_member` trains one member (resumably), `run_sweep` every unfinished one
  in this process;
- `executor.py`, `jobs.py`, `status.py`: one submitit job per member (`local`, `slurm`,
  `debug`), resubmitted when killed, recorded in `jobs/jobs.json`; `sweep status`'s table;
- `fit.py`: power laws of loss against N, D and C (bootstrap intervals, R²) and the joint
  L(N, D) = E + A/N^α + B/D^β; `emergence.py`: smooth / emergent / not reached verdicts;
- `battery.py`: `BatteryConfig`, `run_battery`: every ability, as a discontinuous and a
  continuous metric, on one model; `analyze.py`: `analyze_sweep` runs it on every checkpoint
  of every member (resumable, `battery.json` per member) and writes `sweep.json`;
- `laws.py`: `sweep.json` (schema `workbench.sweep/1`): laws, curves, verdicts;
  `figures.py`: its plotly figures;
- `cli.py`: `workbench sweep plan|run|world|analyze|status`.
"""

from sweep.analyze import AnalyzeConfig, analyze_sweep
from sweep.battery import BatteryConfig, run_battery
from sweep.member import Member, Size, non_embedding_params
from sweep.plan import Plan, load_plan, plan_sweep
from sweep.run import SweepRunConfig, run_sweep
from sweep.spec import SweepSpec, load_spec

__all__ = [
    "AnalyzeConfig",
    "BatteryConfig",
    "analyze_sweep",
    "run_battery",
    "Member",
    "Plan",
    "Size",
    "SweepRunConfig",
    "SweepSpec",
    "load_plan",
    "load_spec",
    "non_embedding_params",
    "plan_sweep",
    "run_sweep",
]
