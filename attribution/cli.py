"""`workbench attribute`: the flags of data attribution (`attribution.attribute`); the command
itself is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from typing import Any

from attribution.methods import METHODS
from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import (
    bounded_int,
    checkpoint_steps,
    floats,
    name_list,
    nonneg_int,
    one_of,
    positive_int,
    seed,
)


def _facts(text: str) -> str:
    """`--facts`: a number of facts, or comma-separated `subject:relation` names."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; pass a number (10) or facts "
                                         "like 'bruno moreau:city'")
    if len(parts) == 1 and parts[0].lstrip("-").isdigit():
        positive_int(parts[0])
        return parts[0]
    bad = [p for p in parts if ":" not in p or not p.rpartition(":")[0].strip()]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a number or SUBJECT:RELATION; "
                                         "pass e.g. 10 or 'bruno moreau:city'")
    return text


def _candidates(text: str) -> str:
    return text if text == "all" else str(nonneg_int(text))


def attribute_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench attribute` besides those every analysis has."""
    p.add_argument("--method", type=name_list(METHODS), default="ekfac",
                   help=f"any of {','.join(METHODS)} (bm25 and a random ranking are always "
                   "added)")
    p.add_argument("--facts", type=_facts, default="10",
                   help="how many facts (spread over people), or SUBJECT:RELATION names, "
                   "comma-separated")
    p.add_argument("--prompt", default=None, help="a free prompt instead of facts (with "
                   "--target)")
    p.add_argument("--target", default=None, help="the one-token word after --prompt")
    p.add_argument("--candidates", type=_candidates, default="5000",
                   help="documents scored besides those stating a queried fact: N (a seeded "
                   "sample of the others) or all (every training document)")
    p.add_argument("--top", type=bounded_int(1, 1000), default=10,
                   help="documents listed per query and method")
    p.add_argument("--params", type=one_of("mlp", "all"), default="mlp",
                   help="parameters of gradients and curvature: mlp | all (linear layers)")
    p.add_argument("--fit-documents", type=positive_int, default=20_000,
                   help="training documents EK-FAC's factors are fitted on")
    p.add_argument("--damping", type=floats(0.0, low_open=True, example="1e-3"), default=None,
                   help="EK-FAC damping (default: 0.1 x the mean eigenvalue)")
    p.add_argument("--dim", type=bounded_int(1, 1 << 20), default=4096,
                   help="sketch size of grad-dot, grad-cos and tracin gradients")
    p.add_argument("--layer", type=nonneg_int, default=None, help="repsim's layer (default: "
                   "the last)")
    p.add_argument("--checkpoints", type=checkpoint_steps, default="all",
                   help="checkpoints TracIn sums over: all or steps (0,500,1000)")
    p.add_argument("--factors", default=None,
                   help="EK-FAC factors folder to use or make (default: in the cache)")
    p.add_argument("--cache", default=None,
                   help="folder of cached factors and scores (default: MODEL/attribution)")
    p.add_argument("--seed", type=seed, default=0)


def attribute_config(args: argparse.Namespace) -> Any:
    """`AttributeConfig` from the flags."""
    from attribution.attribute import AttributeConfig

    facts: int | tuple[str, ...] = (int(args.facts) if args.facts.strip().isdigit() else
                                    tuple(f.strip() for f in args.facts.split(",") if f.strip()))
    return AttributeConfig(
        methods=tuple(m.strip() for m in args.method.split(",") if m.strip()), facts=facts,
        prompt=args.prompt, target=args.target,
        candidates=None if args.candidates == "all" else int(args.candidates), top=args.top,
        params=args.params, fit_documents=args.fit_documents, damping=args.damping,
        dim=args.dim, layer=args.layer, checkpoints=args.checkpoints, factors=args.factors,
        cache=args.cache, seed=args.seed)


FLAGS = AnalysisFlags(attribute_arguments, attribute_config,
                      corpus_help="the world corpus the model was trained on (default: the "
                      "run's)", dashboard=lambda kind, has_corpus: (
                          {"method": "ekfac", "facts": "10"} if has_corpus else None))
ATTRIBUTE = analysis_command(
    "attribute", "attribution.attribute", FLAGS, "which training documents taught a belief: "
    "EK-FAC influence, TracIn, gradient and representation similarity, BM25, scored against "
    "the documents that state each fact", order=78)
