"""What `workbench circuit` prints: per task, each method's recovery of the exact truth and
its faithfulness, the circuit, and the induction check."""

from __future__ import annotations

from typing import Any


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def method_rows(task: dict[str, Any]) -> list[str]:
    """One line per method: node/edge AUROC and AUPRC, top-fraction recovery, CPR, CMD,
    the smallest circuit recovering 90 %, seconds."""
    head = (f"  {'method':12s}{'node AUROC':>11s}{'edge AUROC':>11s}{'edge AUPRC':>11s}"
            f"{'top-k rec.':>11s}{'CPR':>7s}{'CMD':>7s}{'90 % at':>9s}{'seconds':>9s}")
    lines = [head]
    for m, e in task["methods"].items():
        rec = e.get("recovery", {})
        f = e.get("faithfulness") or {}
        lines.append(
            f"  {m:12s}{_f(rec.get('nodes', {}).get('auroc')):>11s}"
            f"{_f(rec.get('edges', {}).get('auroc')):>11s}"
            f"{_f(rec.get('edges', {}).get('auprc')):>11s}"
            f"{_f(f.get('top_recovered')):>11s}{_f(f.get('cpr')):>7s}{_f(f.get('cmd')):>7s}"
            f"{f.get('smallest_90', '-') if f else '-':>9}{e['seconds']:9.2f}")
    return lines


def compared(task: dict[str, Any]) -> str:
    """A compared model's task in one line: the circuit method's recovery of the truth, its
    faithfulness, the circuit's size."""
    c = task.get("circuit") or {}
    m = c.get("method") or next(iter(task["methods"]))
    e = task["methods"][m]
    rec, f = e.get("recovery", {}), e.get("faithfulness") or {}
    return (f"{m} node AUROC {_f(rec.get('nodes', {}).get('auroc'))}, edge AUROC "
            f"{_f(rec.get('edges', {}).get('auroc'))}, top-k recovered "
            f"{_f(f.get('top_recovered'))}, CPR {_f(f.get('cpr'))}; circuit "
            f"{c.get('n_edges', '-')} edges")


def summary(report: dict[str, Any]) -> str:
    """The report as text."""
    g = report["graph"]
    lines = [f"graph: {g['n_layers']} layers x {g['n_heads']} heads"
             + (f" ({g['n_kv']} key/value heads)" if g["n_kv"] != g["n_heads"] else "")
             + f", {len(g['writers'])} writers, {len(g['readers'])} readers, "
             f"{g['n_edges']} edges"]
    for name, t in report["tasks"].items():
        lines.append(f"{name}: metric {t['clean']:.3f} clean, {t['corrupt']:.3f} corrupted "
                     f"({t['n_pairs']} pairs); truth: exact effect >= "
                     f"{t['truth_fraction']:g} of the total"
                     + ("" if "exact" in t["methods"] else " (not measured: no exact run)"))
        k = next((e["faithfulness"]["top_k"] for e in t["methods"].values()
                  if e.get("faithfulness")), None)
        if k is not None:
            lines.append(f"  (top-k rec.: the metric recovered by the top {k} edges, "
                         f"{report['config']['top_fraction']:.0%} of the graph)")
        lines += method_rows(t)
        c = t.get("circuit")
        if c:
            shown = ", ".join(c["edges"][:12]) + (" ..." if len(c["edges"]) > 12 else "")
            lines.append(f"  circuit ({c['method']}, {c['rule']}): {c['n_edges']} edges, "
                         f"recovers {c['recovered']:.3f}: {shown}")
        ic = t.get("induction_check")
        if ic:
            yes = {True: "in", False: "NOT in"}
            heads = [f"{h} {yes[v]}" for h, v in {**ic["induction_heads"],
                                                     **ic["previous_token_heads"]}.items()]
            lines.append("  workbench induction's heads: " + (", ".join(heads) or "none"))
            for p in ic["pairs"]:
                lines.append(
                    f"  K-composition into {p['induction_head']}: direct edge "
                    f"{p['direct_edge']} (path patching {p['k_path']:.3f}) "
                    f"{yes[p['direct_edge_in_circuit']]} the circuit; a path from "
                    f"{p['k_path_all_source']} (all-path patching {p['k_path_all']:.3f}) "
                    f"{yes[p['path_in_circuit']]} it")
    cmp_ = report.get("compare")
    if cmp_:
        for name, tasks in cmp_["models"].items():
            for task, t in tasks.items():
                lines.append(f"{name}, {task}: " + compared(t))
        for task, pairs in cmp_["jaccard"].items():
            loose = cmp_.get("jaccard_unlabelled", {}).get(task, {})
            lines.append(f"{task}: Jaccard of circuit edges (heads' numbers dropped) " + ", ".join(
                f"{k} {_f(v, '.2f')} ({_f(loose.get(k), '.2f')})" for k, v in pairs.items()))
    for row in report.get("dynamics", []):
        lines.append(f"step {row['step']}: " + "; ".join(
            f"{t} effect {v['total']:.2f}, edge AUROC {_f(v['edge_auroc'], '.2f')}, circuit "
            f"{v['circuit_edges']} edges" for t, v in row["tasks"].items()))
    return "\n".join(lines)


def recovery_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task and method: recovery of the exact truth and faithfulness (the
    dashboard's table)."""
    rows = []
    for task, t in report["tasks"].items():
        for m, e in t["methods"].items():
            rec, f = e.get("recovery", {}), e.get("faithfulness") or {}
            rows.append({
                "task": task, "method": m,
                "node AUROC": rec.get("nodes", {}).get("auroc"),
                "edge AUROC": rec.get("edges", {}).get("auroc"),
                "edge AUPRC": rec.get("edges", {}).get("auprc"),
                "top-k recovered": f.get("top_recovered"), "CPR": f.get("cpr"),
                "CMD": f.get("cmd"), "smallest 90 %": f.get("smallest_90"),
                "seconds": round(e["seconds"], 2)})
    return rows
