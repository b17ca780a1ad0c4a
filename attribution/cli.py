"""`workbench attribute`: the flags of data attribution (`attribution.attribute`); the command
itself is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attribution.methods import METHODS
from workbench.cli.analyses import (
    AnalysisFlags,
    AnalysisRunner,
    add_analysis_arguments,
    run_analysis,
)
from workbench.cli.argtypes import (
    bounded_int,
    checkpoint_steps,
    floats,
    int_list,
    ints,
    name_list,
    names,
    nonneg_int,
    one_of,
    positive_int,
    seed,
)
from workbench.cli.argtypes import device as device_type
from workbench.cli.registry import Command

LDS_METHODS = tuple(m for m in METHODS if m != "tracin")  # scored at the run's weights


def _facts(text: str) -> str:
    """`--facts`: a number of facts, or comma-separated `subject:relation` names."""
    parts = names(text)
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
    p.add_argument("--bucket", default=None, help="with --facts N: facts of this exposure "
                   "bucket (low, mid, high)")
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
                   help="checkpoints TracIn sums over: all or steps (0,500,1000); the last "
                   "stands for no training after it, so two give one stretch")
    p.add_argument("--factors", default=None,
                   help="EK-FAC factors folder to use or make (default: in the cache)")
    p.add_argument("--cache", default=None,
                   help="folder of cached factors and scores (default: MODEL/attribution)")
    p.add_argument("--seed", type=seed, default=0)


def attribute_config(args: argparse.Namespace) -> Any:
    """`AttributeConfig` from the flags."""
    from attribution.attribute import AttributeConfig

    facts: int | tuple[str, ...] = (int(args.facts) if args.facts.strip().isdigit() else
                                    names(args.facts))
    return AttributeConfig(
        methods=names(args.method), facts=facts,
        bucket=args.bucket, prompt=args.prompt, target=args.target,
        candidates=None if args.candidates == "all" else int(args.candidates), top=args.top,
        params=args.params, fit_documents=args.fit_documents, damping=args.damping,
        dim=args.dim, layer=args.layer, checkpoints=args.checkpoints, factors=args.factors,
        cache=args.cache, seed=args.seed)


FLAGS = AnalysisFlags(attribute_arguments, attribute_config,
                      corpus_help="the world corpus the model was trained on (default: the "
                      "run's)", dashboard=lambda kind, has_corpus: (
                          {"method": "ekfac", "facts": "10"} if has_corpus else None))


def verify_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench attribute verify`."""
    from sweep.cli import executor_arguments

    p.add_argument("--report", required=True, help="the attribution report to check "
                   "(`workbench attribute` on a run of ours, with --top >= --k)")
    p.add_argument("--out", required=True, help="the plan directory of the retrainings")
    p.add_argument("--k", type=positive_int, default=10, help="documents removed per fact "
                   "and method (its top k)")
    p.add_argument("--seeds", type=int_list(0), default=None, help="training seeds (default: "
                   "the run's own; for another seed, attribute that seed's run and verify "
                   "its report)")
    p.add_argument("--methods", type=name_list(METHODS), default=None,
                   help="the report's methods to check (default: all but random)")
    p.add_argument("--random-seed", type=seed, default=0, help="the random documents' draw")
    p.add_argument("--controls", type=name_list(("random", "mentions")),
                   default="random,mentions", help="the control conditions trained beside the "
                   "methods' (leave one out only when it is measured elsewhere)")
    p.add_argument("--baseline", type=one_of("retrain", "run"), default="retrain",
                   help="the `none` member: retrain (like the others) or run (the attributed "
                   "run itself for its own seed: one training fewer; identical to a "
                   "retraining only on the same kind of machine and thread count)")
    p.add_argument("--plan-only", action="store_true", help="plan the retrainings and stop "
                   "(train them with `workbench sweep run PLAN`, then run this again)")
    p.add_argument("--device", type=device_type, default="auto", help="auto | cpu | cuda")
    executor_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace a plan of other "
                   "settings (members whose config is unchanged keep their runs)")
    p.add_argument("--no-progress", action="store_true")


def lds_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench attribute lds`."""
    from sweep.cli import executor_arguments

    p.add_argument("--model", required=True, help="a run of ours (retrained on the subsets)")
    p.add_argument("--corpus", default=None, help="its world corpus (default: the run's)")
    p.add_argument("--out", required=True, help="the plan directory of the retrainings")
    p.add_argument("--method", type=name_list(LDS_METHODS), default="ekfac",
                   help=f"any of {','.join(LDS_METHODS)} (bm25 and random are always added)")
    p.add_argument("--facts", type=positive_int, default=10, help="how many facts are asked")
    p.add_argument("--bucket", default=None, help="facts of this exposure bucket")
    p.add_argument("--subsets", type=bounded_int(2, 10_000), default=50,
                   help="random subsets trained (each leaves --fraction of the documents out)")
    p.add_argument("--fraction", type=floats(0.0, 1.0, low_open=True, example="0.5"),
                   default=0.5, help="share of documents each subset leaves out")
    p.add_argument("--seeds", type=int_list(0), default=None, help="training seeds per "
                   "subset, the query losses averaged over them (default: the run's own)")
    p.add_argument("--params", type=one_of("mlp", "all"), default="mlp")
    p.add_argument("--fit-documents", type=positive_int, default=20_000)
    p.add_argument("--damping", type=floats(0.0, low_open=True, example="1e-3"), default=None)
    p.add_argument("--dim", type=bounded_int(1, 1 << 20), default=4096)
    p.add_argument("--cache", default=None,
                   help="folder of cached factors and scores (default: MODEL/attribution)")
    p.add_argument("--plan-only", action="store_true", help="plan the subsets and stop")
    p.add_argument("--device", type=device_type, default="auto", help="auto | cpu | cuda")
    executor_arguments(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def run_lds(args: argparse.Namespace) -> list[Path]:
    """`workbench attribute lds`: plan the subsets, score every document, train, measure."""
    import numpy as np

    from attribution import lds as L
    from attribution.attribute import AttributeConfig, select_queries
    from attribution.documents import select_documents
    from attribution.methods import BASELINES, MethodSettings, score
    from sweep.cli import executor_config
    from workbench.models.checkpoints import write_json_atomic
    from workbench.models.refs import ModelRef

    cfg = L.LdsConfig(subsets=args.subsets, fraction=args.fraction, seeds=ints(args.seeds))
    executor = executor_config(args)
    ref = ModelRef.of(args.model)
    if not ref.is_ours:
        raise ValueError(f"--model {args.model!r} is not a run of ours; LDS retrains it, so "
                         "pass a run directory made by `workbench train`")
    corpus_path = ref.corpus_path(args.corpus, required="its training documents")
    plan = L.plan_lds(ref.text, str(corpus_path), args.out, cfg, overwrite=args.overwrite)
    print(f"plan {plan.root}: {cfg.subsets} subsets x {len(plan.spec.seeds)} training seed(s) "
          f"({len(plan.members())} retrainings)")
    if args.plan_only:
        print(f"train them: workbench sweep run {plan.root}; then run this command again")
        return []
    corpus = ref.load_corpus(args.corpus)
    model = ref.load("cpu")
    methods = list(names(args.method))
    qs = select_queries(model, corpus, AttributeConfig(methods=tuple(methods), facts=args.facts,
                                                       bucket=args.bucket))
    docs = select_documents(corpus, qs, None)
    settings = MethodSettings(params=args.params, fit_documents=args.fit_documents,
                              damping=args.damping, dim=args.dim)
    from attribution.attribute import model_cache

    cache = model_cache(model, Path(args.cache) if args.cache else ref.output_dir / "attribution")
    scores = {m: score(m, model, qs, docs, settings, cache=cache, progress=not args.no_progress)
              for m in dict.fromkeys([*methods, *BASELINES])}
    train_members(plan, executor, args, "subset")
    truth = np.stack([docs.stating(q) for q in qs])
    result = L.measure(plan, qs, scores, len(docs), cfg, model=ref.text, truth=truth,
                       progress=not args.no_progress)
    out = plan.root / L.REPORT_FILE
    write_json_atomic(out, result)
    print(L.summary(result))
    print(f"written: {out}")
    return [out]


def _arguments(p: argparse.ArgumentParser) -> None:
    add_analysis_arguments(p, "attribute", FLAGS)
    for action in p._actions:  # `verify` has no --model: checked by the runner instead
        if action.dest == "model":
            action.required = False
    sub = p.add_subparsers(dest="attribute_command", metavar="{verify,lds}")
    verify_arguments(sub.add_parser(
        "verify", help="check the attribution by retraining without the documents each "
        "method blames (a sweep: one member per condition and seed)"))
    lds_arguments(sub.add_parser(
        "lds", help="the linear datamodeling score: retrain on random subsets (a sweep) and "
        "correlate each method's predicted with the actual query losses"))


def train_members(plan: Any, executor: Any, args: argparse.Namespace, noun: str) -> None:
    """Build the plan's corpora and train its unfinished members on the sweep engine (one
    job each); a member that does not finish is one error naming it."""
    from sweep.jobs import run_member_jobs
    from sweep.run import ensure_corpora, finished
    from sweep.status import progress_line

    members = plan.members()
    ensure_corpora(plan, members, progress=not args.no_progress,
                   log=lambda line: print(line, flush=True))
    todo = [m for m in members if not finished(plan, m)]
    records = run_member_jobs(plan, todo, "run", executor, {"device": args.device},
                              log=lambda line: print(line, flush=True),
                              cost=lambda m: m.compute, report=None if args.no_progress
                              else lambda names: progress_line(plan, names, "run"))
    failed = [n for n, r in records.items() if r.state != "done"]
    if failed:
        raise ValueError(f"{noun}(s) {', '.join(failed)} did not finish (`workbench sweep "
                         f"status {plan.root}`); run this command again: the rest is kept")


def run_verify(args: argparse.Namespace) -> list[Path]:
    """`workbench attribute verify`: plan, train (the sweep engine), measure, report."""
    from attribution import verify as v
    from attribution.figures import verify_figure
    from sweep.cli import executor_config
    from workbench.models.checkpoints import write_json_atomic, write_text_atomic

    cfg = v.VerifyConfig(k=args.k, seeds=ints(args.seeds),
                         methods=None if args.methods is None else names(args.methods),
                         random_seed=args.random_seed, baseline=args.baseline,
                         controls=names(args.controls))
    executor = executor_config(args)
    report = v.read_report(args.report)
    plan = v.plan_verify(args.report, args.out, cfg, overwrite=args.overwrite)
    if cfg.baseline == "run":
        for name in v.adopt_run(plan, report["model"]):
            print(f"{name}: the attributed run {report['model']} (--baseline run)")
    members = plan.members()
    print(f"plan {plan.root}: {len(members)} members ({', '.join(plan.spec.drops)} x seeds "
          f"{', '.join(str(s) for s in plan.spec.seeds)})")
    if args.plan_only:
        print(f"train them: workbench sweep run {plan.root}; then run this command again")
        return []
    train_members(plan, executor, args, "member")
    result = v.measure(plan, report, cfg, report_path=str(args.report),
                       progress=not args.no_progress)
    out = plan.root / v.REPORT_FILE
    write_json_atomic(out, result)
    report["verify"] = v.digest(result, str(out))  # the attribution report gains its check
    write_json_atomic(Path(args.report), report)
    fig_path = out.with_suffix(".fig.json")
    write_text_atomic(fig_path, verify_figure(result).to_json())
    print(v.summary(result))
    print(f"written: {out}, {fig_path}")
    return [out, fig_path]


class AttributeRunner(AnalysisRunner):
    """`workbench attribute` (the generic analysis command) or `... verify`."""

    def __call__(self, args: argparse.Namespace) -> list[Path]:
        if getattr(args, "attribute_command", None) == "verify":
            return run_verify(args)
        if getattr(args, "attribute_command", None) == "lds":
            return run_lds(args)
        if args.model is None:
            raise ValueError("the following argument is required: --model (or `workbench "
                             "attribute verify --report ...`)")
        return run_analysis(self.module_name, self.flags, args)


ATTRIBUTE = Command(
    "attribute", "which training documents taught a belief: EK-FAC influence, TracIn, "
    "gradient and representation similarity, BM25, scored against the documents that state "
    "each fact; `attribute verify` checks it by retraining",
    _arguments, AttributeRunner("attribution.attribute", FLAGS), order=78,
    on_interrupt="what was computed is cached (factors, scores, trained members); run the "
    "command again to go on")
