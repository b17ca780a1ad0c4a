"""`workbench icl`: the flags of few-shot in-context learning (`icl.measure`); the command
itself is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import bounded_int, checkpoint_steps, floats, int_list, name_list
from workbench.world.fewshot import TASKS


def icl_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench icl` besides those every analysis has."""
    p.add_argument("--k", type=int_list(0), default="0,1,2,4,8",
                   help="numbers of demonstrations (of 0,1,2,4,8)")
    p.add_argument("--tasks", type=name_list(TASKS), default=",".join(TASKS),
                   help=f"any of {','.join(TASKS)}")
    p.add_argument("--n", type=bounded_int(1, 100_000), default=None,
                   help="items per task and k (default: all)")
    p.add_argument("--checkpoints", type=checkpoint_steps, default=None,
                   help="`all` or steps (0,64,512): also measure the run's checkpoints")
    p.add_argument("--min-score", type=floats(0.0, 1.0, example="0.4"), default=0.4,
                   help="induction score from which a head is ablated as an induction head")
    p.add_argument("--no-mechanism", action="store_true", help="skip the induction heads' "
                   "attention and ablation")


def icl_config(args: argparse.Namespace) -> Any:
    """`IclConfig` from the flags."""
    from icl.measure import IclConfig

    return IclConfig(tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                     ks=tuple(int(k) for k in args.k.split(",") if k.strip()), n=args.n,
                     checkpoints=args.checkpoints, mechanism=not args.no_mechanism,
                     min_score=args.min_score)


def _dashboard(kind: str, has_corpus: bool) -> dict[str, Any] | None:
    """The command's defaults, and for our runs every checkpoint too (the page's "accuracy
    over training" reads them); it needs a world corpus (the few-shot items)."""
    if not has_corpus:
        return None
    return {"checkpoints": "all"} if kind == "run" else {}


FLAGS = AnalysisFlags(icl_arguments, icl_config,
                      corpus_help="world corpus with few-shot items, in the model's tokenizer "
                      "(default: the run's; `workbench world retokenize` for a Hugging Face "
                      "model)",
                      dashboard=_dashboard, flag_names={"ks": "--k"})
ICL = analysis_command("icl", "icl.measure", FLAGS, "few-shot in-context learning: accuracy "
                       "and log-probability per task and number of demonstrations (known "
                       "relations, novel mappings, flipped labels)", order=75)
