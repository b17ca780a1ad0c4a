"""The text summary of an attribution report (`workbench.attribute/1`), as
`workbench attribute` prints it."""

from __future__ import annotations

from typing import Any


def summary(report: dict[str, Any]) -> str:
    """Per method: mean precision@10, @100 and average precision of retrieving the documents
    that state each fact, Spearman with the facts' mentions, seconds; then each query's top
    document by the first method."""
    methods = report["methods"]
    docs = report["documents"]
    lines = [f"{len(report['queries'])} queries, {docs['scored']:,} of "
             f"{docs['train_documents']:,} training documents scored"]
    first = next(iter(methods.values()))
    if first["facts"]:
        lines.append(f"{'method':9s} {'P@10':>6s} {'P@100':>6s} {'AUPRC':>6s} "
                     f"{'rho(mentions)':>13s} {'seconds':>8s}")
        for name, m in methods.items():
            rho = m["influence_vs_mentions"]
            lines.append(f"{name:9s} {m['mean']['p@10']:6.2f} {m['mean']['p@100']:6.2f} "
                         f"{m['mean']['ap']:6.3f} {'-' if rho is None else f'{rho:+.2f}':>13s} "
                         f"{m['seconds']:8.1f}")
        lines.append(f"random expectation (share of candidates stating the fact): "
                     f"{first['mean']['base_rate']:.3f}")
    name, m = next(iter(methods.items()))
    for query, top in list(m["top"].items())[:3]:
        if top:
            d = top[0]
            mark = "states it" if d["states"] else "does not state it"
            lines.append(f"{query}: {name}'s top document #{d['doc']} ({mark}): "
                         f"{d['text'][:90]!r}")
    if "tracin" in report:
        by = report["tracin"]["half_step_by_bucket"]
        lines.append("TracIn, step by which half of a fact was taught, by exposure: "
                     + ", ".join(f"{b} {v:.0f}" for b, v in by.items()))
    return "\n".join(lines)
