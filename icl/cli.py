"""`workbench icl`: few-shot in-context learning from the command line (registered under the
`workbench.commands` entry points; `icl.measure` does the work)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.argtypes import bounded_int, device, floats, int_list, name_list
from workbench.cli.registry import Command
from workbench.models.devices import add_placement_args, placement_of
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
    p.add_argument("--min-score", type=floats(0.0, 1.0, example="0.4"), default=0.4,
                   help="induction score from which a head is ablated as an induction head")
    p.add_argument("--no-mechanism", action="store_true", help="skip the induction heads' "
                   "attention and ablation")
    p.add_argument("--device", type=device, default="cpu")
    add_placement_args(p)
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
    return "\n".join(lines + _mechanism_lines(report.get("mechanism")))


def _mechanism_lines(mech: dict[str, Any] | None) -> list[str]:
    if not mech:
        return []
    if not mech["induction_heads"]:
        return [f"induction heads: none ({mech.get('note', '')})"]
    lines = [f"induction heads {', '.join(mech['induction_heads'])} (control: "
             f"{', '.join(mech['control_heads'])})"]
    if "attention" in mech:
        att = ", ".join(f"k={k} {a['to_matching_answer']:.2f}"
                        + ("" if a["to_other_answer"] is None
                           else f" (others {a['to_other_answer']:.2f})")
                        for k, a in mech["attention"].items())
        lines.append(f"  attention to the matching demonstration's answer: {att}")
    if "novel" in mech:
        n = mech["novel"]
        share = "n/a" if n["share_removed"] is None else f"{n['share_removed']:.0%}"
        lines.append(f"  novel mappings at k={n['k']}: {n['accuracy']:.2f}, induction heads "
                     f"ablated {n['ablated']:.2f}, control {n['control']:.2f} (removes {share} "
                     "of the accuracy above chance)")
    for row in mech.get("novel_curve", []):
        control = ("no control head left" if row["control_accuracy"] is None
                   else f"control {row['control_accuracy']:.2f}")
        lines.append(f"  top {row['n']} heads by induction score ({', '.join(row['heads'])}) "
                     f"ablated: {row['accuracy']:.2f} ({control})")
    return lines


def icl_command(args: argparse.Namespace) -> None:
    from icl import measure
    from workbench.analysis import check_output, report_path, write_report

    out = check_output(args.out or report_path(args.model, measure.KIND), args.overwrite,
                       inputs={"--corpus": args.corpus}, model=args.model)
    cfg = measure.IclConfig(
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        ks=tuple(int(k) for k in args.k.split(",") if k.strip()), n=args.n,
        checkpoints=args.checkpoints, mechanism=not args.no_mechanism,
        min_score=args.min_score, progress=not args.no_progress)
    report = measure.from_ref(args.model, cfg, corpus=args.corpus, device=placement_of(args))
    paths = write_report(report, out, measure.FIGURES, overwrite=args.overwrite)
    print(summary_table(report))
    print("written: " + ", ".join(str(p) for p in paths))


ICL = Command("icl", "few-shot in-context learning: accuracy and log-probability per task and "
              "number of demonstrations (known relations, novel mappings, flipped labels)",
              icl_arguments, icl_command, order=75)
