"""`workbench beliefs`: the flags of the belief tests (`beliefs.suite`); the command itself is
the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import (
    bounded_int,
    floats,
    int_list,
    name_list,
    nonneg_int,
    positive_int,
)


def belief_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench beliefs` besides those every analysis has."""
    p.add_argument("--facts", default=None, help="fact list (schema workbench.facts/1); "
                   "default: the world facts of a world corpus, else datasets/facts/"
                   "real_facts.json")
    p.add_argument("--method", type=name_list(("icl", "rome", "memit", "ft", "steer", "sae")),
                   default="icl,rome,memit,ft,steer", help="any of icl,rome,memit,ft,steer,sae "
                   "(sae: a sparse dictionary's latents clamped at the subject; needs one of "
                   "the model)")
    p.add_argument("--regimes", type=name_list(("single", "batch", "sequential")),
                   default="single", help="any of single (each fact edited alone: the method "
                   "table), batch (MEMIT on --batch-sizes facts at once), sequential (MEMIT "
                   "edits one after another: AlphaEdit's projection, the earlier edits' keys held, "
                   "neither)")
    p.add_argument("--batch-sizes", type=int_list(0), default="10,50,0",
                   help="facts per batch edit of --regimes batch (0: every fact of the "
                   "relation)")
    p.add_argument("--sequential", type=bounded_int(1, 100_000), default=100,
                   help="edits of --regimes sequential (measured after every 10)")
    p.add_argument("--sequential-runs", type=name_list(("projected", "held", "plain")),
                   default="projected,held,plain", help="the runs of --regimes sequential: "
                   "projected (AlphaEdit), held (the earlier edits' keys in MEMIT's "
                   "regulariser), plain")
    p.add_argument("--regime-relation", default="city",
                   help="the relation the batch and sequential regimes edit")
    p.add_argument("--memit-layers", type=int_list(0), default=None,
                   help="MEMIT's layers, e.g. 0,1 (default: the causal trace's range)")
    p.add_argument("--memit-keys", choices=("rows+kept", "rows", "mean"), default="rows+kept",
                   help="what MEMIT's solve fits: every context the subject is edited in "
                   "and its other relations' prompts (rows+kept), the edit contexts only "
                   "(rows), or one mean key per fact as published (mean)")
    p.add_argument("--memit-lambda", type=floats(0.0, low_open=True, example="10"), default=None,
                   help="MEMIT's weight of the corpus keys' second moment against the edited "
                   "keys (larger: smaller changes; default 1)")
    p.add_argument("--retain", type=floats(0.0, example="1"), default=None,
                   help="weight of the retention term of ROME and MEMIT (the subject's other "
                   "relations held at their outputs; 0: off; default: 0 for ROME, its "
                   "published settings, 1 for MEMIT)")
    p.add_argument("--sae", default=None, help="the dictionary of --method sae (`workbench sae "
                   "train --out`; default: the model's only one under MODEL/sae/)")
    p.add_argument("--n", type=bounded_int(1, 100_000), default=50, help="beliefs tested")
    p.add_argument("--seeds", type=int_list(0), default="0",
                   help="comma-separated seeds (new objects, contexts)")
    p.add_argument("--relations", type=name_list(), default=None,
                   help="e.g. city,job (default: all direct)")
    p.add_argument("--layer", type=nonneg_int, default=None,
                   help="edited MLP layer (default: the causal-trace peak)")
    p.add_argument("--n-trace", type=bounded_int(0, 10_000), default=10,
                   help="facts traced for the peak layer")
    p.add_argument("--trace-samples", type=bounded_int(1, 10_000), default=10,
                   help="noise draws per trace")
    p.add_argument("--cov-tokens", type=positive_int, default=100_000,
                   help="corpus tokens for the key covariance")
    p.add_argument("--probes", default=None, help="probe report to compare the trace's peak "
                   "layer with (default: MODEL/analyses/probe.json when present)")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: pass comma-separated integers like 0,1") from exc


def belief_config(args: argparse.Namespace) -> Any:
    """`BeliefsConfig` from the flags."""
    from dataclasses import replace

    from beliefs.memit import MemitConfig
    from beliefs.regimes import RegimeConfig
    from beliefs.rome import RomeConfig
    from beliefs.suite import BeliefsConfig
    from circuits.tracing import TraceConfig

    methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    relations = tuple(r.strip() for r in args.relations.split(",")) if args.relations else None
    rome, memit = RomeConfig(), MemitConfig(keys=args.memit_keys)
    if args.memit_lambda is not None:
        memit = replace(memit, mom2_weight=args.memit_lambda)
    if args.retain is not None:
        rome = replace(rome, retain_weight=args.retain)
        memit = replace(memit, z=replace(memit.z, retain_weight=args.retain))
    regime = RegimeConfig(regimes=tuple(r for r in args.regimes.split(",") if r),
                          relation=args.regime_relation,
                          batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
                          sequential=args.sequential,
                          runs=tuple(r for r in args.sequential_runs.split(",") if r))
    return BeliefsConfig(methods=methods, n=args.n, seeds=_ints(args.seeds, "--seeds"),
                         relations=relations, layer=args.layer, n_trace=args.n_trace,
                         cov_tokens=args.cov_tokens, rome=rome, memit=memit, regime=regime,
                         memit_layers=(_ints(args.memit_layers, "--memit-layers")
                                       if args.memit_layers else None),
                         trace=TraceConfig(n_samples=args.trace_samples))


def _dashboard(kind: str, has_corpus: bool) -> dict[str, Any]:
    """The dashboard's button: the command's defaults for our runs with a corpus (the report
    of docs/results.md, `--n 50`: about 2 minutes for the shipped model on 2 cores). A
    Hugging Face model (GPT-2 small and up: one edit costs what our whole run's report does)
    tests 20 beliefs, a preview. Without a corpus: the real-fact list with the ladder and
    fine-tuning only (ROME's key covariance reads a corpus) at layer 0 (a model may state
    none of those facts with a one-token object, leaving no causal trace to pick a layer)."""
    options: dict[str, Any] = {} if kind == "run" else {"n": 20}
    return options if has_corpus else {**options, "method": "icl,ft", "layer": 0}


def beliefs_precheck(args: argparse.Namespace, ref: Any, corpus: Any) -> None:
    """What the belief tests refuse without the model: a layer it does not have, relations
    the facts lack, a fact list or probe report that does not read, a dictionary for
    `--method sae` that is missing, damaged or not chosen among several."""
    from beliefs.factbase import load_facts
    from beliefs.suite import default_facts, load_latent_dictionary

    n_layers = ref.n_layers
    if args.layer is not None and n_layers is not None and args.layer >= n_layers:
        raise ValueError(f"--layer {args.layer} is out of range; model {ref.text} has layers "
                         f"0..{n_layers - 1}")
    base = load_facts(args.facts) if args.facts else default_facts(corpus)
    load_latent_dictionary(ref, belief_config(args), args.sae)  # missing, damaged, several
    for name in (args.relations or "").split(","):
        if name.strip():
            base.relation(name.strip())
    if args.regimes != "single":
        base.relation(args.regime_relation)
    for la in _ints(args.memit_layers or "", "--memit-layers"):
        if n_layers is not None and la >= n_layers - (n_layers > 1):
            raise ValueError(f"--memit-layers {args.memit_layers}: layer {la} is out of range; "
                             f"MEMIT edits layers 0..{max(n_layers - 2, 0)} of {ref.text}")


FLAGS = AnalysisFlags(belief_arguments, belief_config,
                      corpus_help="corpus for ROME's key covariance and the fluency loss, in "
                      "the model's tokenizer (default: the run's)",
                      inputs=lambda args: {"facts": args.facts, "probes": args.probes,
                                           "sae": args.sae},
                      dashboard=_dashboard, precheck=beliefs_precheck)
BELIEFS = analysis_command("beliefs", "beliefs.suite", FLAGS, "elicit facts, trace them, and "
                           "try to change them (in-context pressure, ROME, fine-tuning)",
                           order=70)
