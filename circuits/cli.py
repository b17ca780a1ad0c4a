"""`workbench induction`: the induction analysis from the command line (registered under the
`workbench.commands` entry points; `circuits.induction` does the work)."""

from __future__ import annotations

import argparse

from workbench.cli.argtypes import bounded_int, device, floats, int_list, seed
from workbench.cli.registry import Command
from workbench.models.devices import add_placement_args, placement_of


def _checkpoints(text: str) -> str:
    return text if text == "all" else int_list(0)(text)


def induction_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--out", default=None,
                   help="JSON output (default: MODEL/analyses/induction.json)")
    p.add_argument("--checkpoints", type=_checkpoints, default=None,
                   help="`all` or steps (0,64,512): also score the run's checkpoints")
    p.add_argument("--corpus", default=None, help="corpus for the ICL score (default: the "
                   "run's)")
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
    p.add_argument("--device", type=device, default="cpu")
    add_placement_args(p)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def induction_command(args: argparse.Namespace) -> None:
    from circuits import induction
    from workbench.analysis import check_output, report_path, write_report

    out = check_output(args.out or report_path(args.model, induction.KIND), args.overwrite,
                       inputs={"--corpus": args.corpus}, model=args.model)
    cfg = induction.InductionConfig(n_seqs=args.n_seqs, seed=args.seed,
                                    min_score=args.min_score, min_ablation=args.min_ablation,
                                    checkpoints=args.checkpoints, exact=args.exact,
                                    path_sources=args.path_sources)
    report = induction.from_ref(args.model, cfg, corpus=args.corpus, device=placement_of(args),
                                progress=not args.no_progress)
    paths = write_report(report, out, induction.FIGURES, overwrite=args.overwrite)
    print(induction.head_table(report))
    print(induction.summary(report))
    print("written: " + ", ".join(str(p) for p in paths))


INDUCTION = Command("induction", "find induction heads (scores, ablation, composition, phase "
                    "change)", induction_arguments, induction_command, order=50)
