"""The text summary of an in-context learning report (`workbench.icl/1`), as `workbench icl`
prints it."""

from __future__ import annotations

from typing import Any


def summary(report: dict[str, Any]) -> str:
    """What `workbench icl` prints: accuracy per task (rows) and k (columns), chance, the
    headline numbers and the induction heads' part."""
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
