"""Figures of the attribution report: each method's retrieval of the documents that state a
fact (average precision per fact, the mean as a bar, random's expectation dashed), average
precision against how often the fact is stated in training, and TracIn's share of each
fact's teaching per stretch of training."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from workbench.plots import model_name, palette

Report = dict[str, Any]


def _colours(report: Report) -> dict[str, str]:
    names = list(report["methods"])
    return dict(zip(names, palette(len(names))))


def retrieval_figure(report: Report) -> go.Figure | None:
    """Mean average precision per method (bars), each fact's as points; dashed: what a
    random ranking scores in expectation (the share of candidates that state the fact)."""
    methods = report["methods"]
    if not any(m["facts"] for m in methods.values()):
        return None  # a free prompt: nothing says which documents state it
    colours = _colours(report)
    fig = go.Figure()
    for name, m in methods.items():
        fig.add_trace(go.Bar(x=[name], y=[m["mean"]["ap"]], name=f"{name} (mean)",
                             marker_color=colours[name], opacity=0.6, legendgroup=name))
        facts = list(m["facts"])
        fig.add_trace(go.Scatter(x=[name] * len(facts), y=[m["facts"][f]["ap"] for f in facts],
                                 mode="markers", text=facts, name=f"{name} (per fact)",
                                 legendgroup=name, showlegend=False,
                                 marker={"color": colours[name], "size": 7,
                                         "line": {"width": 1, "color": "#333"}}))
    base = next(iter(methods.values()))["mean"]["base_rate"]
    fig.add_hline(y=base, line_dash="dash", line_color="#7f7f7f",
                  label={"text": f"random ranking's expectation ({base:.3f})",
                         "textposition": "end"})
    docs = report["documents"]
    fig.update_layout(title=f"{model_name(report['model'])}: retrieving the documents that "
                      f"state each fact ({docs['scored']:,} documents scored)",
                      yaxis_title="average precision (AUPRC)", xaxis_title="method",
                      template="plotly_white", barmode="overlay")
    fig.update_yaxes(range=[0, 1.02])
    return fig


def exposure_figure(report: Report) -> go.Figure | None:
    """Average precision of each fact against its training mentions, one colour per method:
    are the documents of rarely stated facts found as well as those of common ones?"""
    methods = report["methods"]
    if not any(m["facts"] for m in methods.values()):
        return None
    mentions = {q["fact"]: q["mentions"] for q in report["queries"]}
    colours = _colours(report)
    fig = go.Figure()
    for name, m in methods.items():
        facts = list(m["facts"])
        fig.add_trace(go.Scatter(x=[mentions[f] for f in facts],
                                 y=[m["facts"][f]["ap"] for f in facts], text=facts,
                                 mode="markers", name=name,
                                 marker={"color": colours[name], "size": 8}))
    fig.update_layout(title="Retrieval against how often the fact is stated",
                      xaxis_title="training mentions of the fact", xaxis_type="log",
                      yaxis_title="average precision (AUPRC)", template="plotly_white")
    return fig


def tracin_figure(report: Report) -> go.Figure | None:
    """Per fact, the share of its teaching (TracIn over the documents that state it) made by
    each checkpoint's stretch of training, coloured by exposure bucket."""
    tr = report.get("tracin")
    if not tr or not tr["facts"]:
        return None
    buckets = sorted({f["bucket"] for f in tr["facts"].values()})
    colours = dict(zip(buckets, palette(len(buckets))))
    fig = go.Figure()
    shown: set[str] = set()
    for name, f in tr["facts"].items():
        fig.add_trace(go.Scatter(x=tr["steps"], y=f["share"], mode="lines+markers",
                                 name=f"exposure {f['bucket']}", legendgroup=f["bucket"],
                                 showlegend=f["bucket"] not in shown, text=[name] * len(
                                     tr["steps"]), line={"color": colours[f["bucket"]]}))
        shown.add(f["bucket"])
    fig.update_layout(title="When each fact was taught (TracIn share per checkpoint interval)",
                      xaxis_title="training step (start of the interval)",
                      yaxis_title="share of the fact's teaching", template="plotly_white")
    return fig


FIGURES = {".retrieval.fig.json": retrieval_figure, ".exposure.fig.json": exposure_figure,
           ".tracin.fig.json": tracin_figure}


def verify_figure(report: Report) -> go.Figure:
    """Per training seed, each condition's mean margin drop (baseline minus retrained, over
    the facts) when its documents are removed and the model retrained."""
    seeds = list(report["seeds"])
    conditions = [c for c in next(iter(report["seeds"].values())) if c != "none"]
    colours = dict(zip(seeds, palette(len(seeds))))
    fig = go.Figure()
    for seed in seeds:
        drop = report["verdicts"].get(seed, {}).get("drop", {})
        fig.add_trace(go.Bar(x=conditions, y=[drop.get(c) for c in conditions],
                             name=f"training seed {seed}", marker_color=colours[seed]))
    k = report["config"]["k"]
    fig.update_layout(title=f"Margin lost when retrained without the documents (top {k} per "
                      f"fact, {len(report['facts'])} facts)", barmode="group",
                      xaxis_title="documents removed", template="plotly_white",
                      yaxis_title="mean margin drop (nats)")
    return fig
