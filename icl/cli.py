"""`workbench icl`: few-shot in-context learning from the command line (registered under the
`workbench.commands` entry points; `icl.measure` does the work)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.argtypes import bounded_int, device, int_list, name_list
from workbench.commands import Command
from workbench.world.fewshot import TASKS


def _checkpoints(text: str) -> str:
    return text if text == "all" else int_list(0)(text)


def icl_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or HF dir")
    p.add_argument("--corpus", default=None, help="world corpus with few-shot items, in the "
                   "model's tokenizer (default: the run's; `workbench world retokenize` for a "
                   "Hugging Face model)")
    p.add_argument("--k", type=int_list(0), default="0,1,2,4,8",
                   help="numbers of demonstrations (of 0,1,2,4,8)")
    p.add_argument("--tasks", type=name_list(TASKS), default=",".join(TASKS),
                   help=f"any of {','.join(TASKS)}")
    p.add_argument("--n", type=bounded_int(1, 100_000), default=None,
                   help="items per task and k (default: all)")
    p.add_argument("--checkpoints", type=_checkpoints, default=None,
                   help="`all` or steps (0,64,512): also measure the run's checkpoints")
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--out", default=None, help="JSON output (default: MODEL/analyses/icl.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def summary_table(report: dict[str, Any]) -> str:
    """Accuracy per task (rows) and k (columns), chance, and the headline numbers."""
    tasks = report["tasks"]
    ks = sorted(next(iter(tasks.values()))["k"], key=int)
    lines = [f"{'task':15s} {'kind':8s} {'chance':>6s} " + " ".join(f"{'k=' + k:>6s}"
                                                                    for k in ks)]
    for name, t in tasks.items():
        lines.append(f"{name:15s} {t['kind']:8s} {t['chance']:6.2f} "
                     + " ".join(f"{t['k'][k]['accuracy']:6.2f}" for k in ks))
    h = report["headline"]
    lo, hi = str(h["k_min"]), str(h["k_max"])
    if "known_rise" in h:
        lines.append(f"known relations: accuracy {h['known_accuracy'][lo]:.2f} at k={lo}, "
                     f"{h['known_accuracy'][hi]:.2f} at k={hi} (rise {h['known_rise']:+.2f})")
    if "novel_accuracy" in h:
        lines.append(f"novel mappings: accuracy {h['novel_accuracy']:.2f} at k={hi} "
                     f"(chance {h['novel_chance']:.2f})")
    if "flipped_follow_context" in h:
        follow = ", ".join(f"k={k} {v:.2f}" for k, v in h["flipped_follow_context"].items())
        lines.append(f"flipped labels: share following the context {follow}")
    return "\n".join(lines)


def icl_command(args: argparse.Namespace) -> None:
    from icl import measure
    from workbench.analysis import check_output, report_path, write_report

    out = check_output(args.out or report_path(args.model, measure.KIND), args.overwrite,
                       inputs={"--corpus": args.corpus}, model=args.model)
    cfg = measure.IclConfig(
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        ks=tuple(int(k) for k in args.k.split(",") if k.strip()), n=args.n,
        checkpoints=args.checkpoints, progress=not args.no_progress)
    report = measure.from_ref(args.model, cfg, corpus=args.corpus, device=args.device)
    paths = write_report(report, out, measure.FIGURES, overwrite=args.overwrite)
    print(summary_table(report))
    print("written: " + ", ".join(str(p) for p in paths))


ICL = Command("icl", "few-shot in-context learning: accuracy and log-probability per task and "
              "number of demonstrations (known relations, novel mappings, flipped labels)",
              icl_arguments, icl_command, order=75)
