"""`workbench induction` and `workbench circuit`: the flags of the induction analysis
(`circuits.induction`) and of circuit discovery (`circuits.circuit`); each
command itself is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import bounded_int, checkpoint_steps, floats, name_list, names, seed


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


def circuit_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench circuit` besides those every analysis has."""
    from circuits.discovery import METHODS
    from circuits.tasks import TASKS

    p.add_argument("--task", type=name_list(tuple(TASKS)), default="induction,facts,agreement",
                   help=f"tasks, comma-separated ({', '.join(TASKS)})")
    p.add_argument("--method", type=name_list(METHODS), default="eap-ig,eap,attribution",
                   help="methods, comma-separated; the first one's scores give the circuit "
                   "(exact patching, the truth, runs as well on graphs up to 5,000 edges)")
    p.add_argument("--ig-steps", type=bounded_int(1, 1000), default=5,
                   help="integrated-gradient steps of eap-ig")
    p.add_argument("--n-pairs", type=bounded_int(1, 100_000), default=64,
                   help="clean/corrupted pairs per task")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--truth", choices=("auto", "always", "never"), default="auto",
                   help="exact patching of every node and edge (auto: up to 5,000 edges)")
    p.add_argument("--truth-fraction", type=floats(0.0, 1.0, low_open=True, example="0.02"),
                   default=0.02, help="an edge is in the truth when its exact effect is at "
                   "least this fraction of the total")
    p.add_argument("--top-fraction", type=floats(0.0, 1.0, low_open=True, example="0.05"),
                   default=0.05, help="the faithfulness curve reports what this top fraction "
                   "of edges recovers")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--top-k", type=bounded_int(1), default=None,
                      help="the circuit: the top K edges (default: the smallest top-k that "
                      "recovers 90 %%)")
    rule.add_argument("--threshold", type=floats(0.0, example="0.02"), default=None,
                      help="the circuit: edges with |score| >= this fraction of the total")
    rule.add_argument("--acdc", type=floats(0.0, example="0.01"), default=None,
                      help="the circuit: greedy ACDC with exact patching at this threshold")
    p.add_argument("--checkpoints", type=checkpoint_steps, default=None,
                   help="`all` or steps: recovery and circuit size at the run's checkpoints")
    p.add_argument("--compare", nargs="+", default=(), metavar="MODEL",
                   help="other models of the same shape (training seeds): their circuits "
                   "and the Jaccard similarity of edge sets")
    p.add_argument("--batch-pairs", type=bounded_int(1, 100_000), default=64,
                   help="pairs per forward pass")


def circuit_config(args: argparse.Namespace) -> Any:
    """`CircuitConfig` from the flags."""
    from circuits.circuit import CircuitConfig

    return CircuitConfig(tasks=names(args.task), methods=names(args.method),
                         ig_steps=args.ig_steps, n_pairs=args.n_pairs, seed=args.seed,
                         truth=args.truth, truth_fraction=args.truth_fraction,
                         top_fraction=args.top_fraction, top_k=args.top_k,
                         threshold=args.threshold, acdc=args.acdc,
                         checkpoints=args.checkpoints, batch_pairs=args.batch_pairs)


def _circuit_dashboard(kind: str, has_corpus: bool) -> dict[str, Any]:
    """With a corpus every task's default; without one, the task that needs none."""
    return {} if has_corpus else {"task": "induction", "corpus": None}


CIRCUIT_FLAGS = AnalysisFlags(
    circuit_arguments, circuit_config,
    corpus_help="world corpus the tasks are built from (default: the run's; induction "
                "needs none)",
    inputs=lambda args: {"compare": tuple(args.compare)} if args.compare else {},
    dashboard=_circuit_dashboard,
    flag_names={"tasks": "--task", "methods": "--method"})
CIRCUIT = analysis_command("circuit", "circuits.circuit", CIRCUIT_FLAGS,
                           "find circuits (attribution patching, EAP, EAP-IG, ACDC) and score "
                           "them against exact patching", order=55)
