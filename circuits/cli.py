"""`workbench induction`: the flags of the induction analysis (`circuits.induction`); the
command itself is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import bounded_int, checkpoint_steps, floats, seed


def induction_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench induction` besides those every analysis has."""
    p.add_argument("--checkpoints", type=checkpoint_steps, default=None,
                   help="`all` or steps (0,64,512): also score the run's checkpoints")
    p.add_argument("--n-seqs", type=bounded_int(1, 100_000), default=32,
                   help="repeated random sequences")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--min-score", type=floats(0.0, 1.0, example="0.4"), default=0.4)
    p.add_argument("--min-ablation", type=floats(0.0, example="0.5"), default=0.5, help="nats")
    p.add_argument("--exact", choices=("auto", "all", "candidates"), default="auto",
                   help="heads ablated and path-patched exactly: all, or the candidates "
                   "(induction score >= --min-score); auto: all up to 64 heads (every head "
                   "also gets a one-pass attribution estimate)")
    p.add_argument("--path-sources", type=bounded_int(1, 10_000), default=4,
                   help="with candidates: earlier heads path-patched into each induction "
                   "head's keys (top by weight K-composition, and by previous-token score)")


def induction_config(args: argparse.Namespace) -> Any:
    """`InductionConfig` from the flags."""
    from circuits.induction import InductionConfig

    return InductionConfig(n_seqs=args.n_seqs, seed=args.seed, min_score=args.min_score,
                           min_ablation=args.min_ablation, checkpoints=args.checkpoints,
                           exact=args.exact, path_sources=args.path_sources)


def _dashboard(kind: str, has_corpus: bool) -> dict[str, Any]:
    """The command's defaults, and for our runs every checkpoint too (the page's "phase
    change over checkpoints" reads them; with the ICL score when the corpus is there); a
    Hugging Face model its heads only (no corpus: ours is in another tokenizer)."""
    return {"checkpoints": "all"} if kind == "run" else {"corpus": None}


FLAGS = AnalysisFlags(induction_arguments, induction_config,
                      corpus_help="corpus for the ICL score (default: the run's)",
                      dashboard=_dashboard)
INDUCTION = analysis_command("induction", "circuits.induction", FLAGS,
                             "find induction heads (scores, ablation, composition, phase "
                             "change)", order=50)
