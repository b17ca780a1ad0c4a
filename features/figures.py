"""Figures of dictionaries: the training curve, the recovery of planted labels, and recall
against exposure."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots import palette


def training_figure(curve: list[dict[str, Any]]) -> go.Figure:
    """FVU and L0 (and dead latents) against training tokens."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("fraction of variance unexplained",
                                                        "L0 (active latents per row)",
                                                        "dead latents"))
    tokens = [p["tokens"] for p in curve]
    colors = palette(3)
    for col, (key, name) in enumerate((("fvu", "FVU"), ("l0", "L0"),
                                       ("dead", "dead latents")), start=1):
        fig.add_trace(go.Scatter(x=tokens, y=[p.get(key) for p in curve], mode="lines",
                                 name=name, line={"color": colors[col - 1]}), row=1, col=col)
        fig.update_xaxes(title_text="training rows", row=1, col=col)
        fig.update_yaxes(title_text=name, row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=1)
    for col, key in ((2, "l0"), (3, "dead")):  # whole numbers over a short span: whole ticks
        values = [float(p.get(key) or 0) for p in curve]
        if values and all(v.is_integer() for v in values) and max(values) - min(values) < 10:
            fig.update_yaxes(dtick=1, row=1, col=col)
    fig.update_layout(title="dictionary training", height=360)
    return fig


def recovery_figure(report: dict[str, Any]) -> go.Figure | None:
    """Per label value, the best latent's F1 beside the best MLP neuron's and residual
    dimension's (each task a group on the x axis)."""
    xs, groups = [], []
    series: dict[str, list[float | None]] = {"latent": [], "neuron": [], "residual": []}
    for task, t in report.get("tasks", {}).items():
        for v in t["values"]:
            xs.append(f"{task}:{v['value']}")
            groups.append(task)
            series["latent"].append(v["latent"]["f1"])
            series["neuron"].append(v["neuron"]["f1"] if v["neuron"] else None)
            series["residual"].append(v["residual"]["f1"])
    if not xs:
        return None
    colors = palette(3)
    fig = go.Figure()
    for (name, ys), color in zip(series.items(), colors):
        label = {"latent": "best latent (active > 0)", "neuron": "best MLP neuron (best "
                 "threshold)", "residual": "best residual dimension (best threshold)"}[name]
        fig.add_trace(go.Bar(x=xs, y=ys, name=label, marker_color=color))
    fig.add_hline(y=0.8, line_dash="dot", name="F1 0.8", annotation_text="F1 0.8")
    d = report.get("dictionary", {})
    fig.update_layout(barmode="group", height=460, yaxis={"title": "F1", "range": [0, 1]},
                      title=f"planted labels recovered by single latents: {d.get('arch')} "
                      f"{d.get('d_sae')} latents at {report.get('hook')}",
                      xaxis={"title": "task:label value", "tickangle": -60})
    return fig


def exposure_figure(report: dict[str, Any]) -> go.Figure | None:
    """Per person: how often their city's best latent fires at their mentions, against how
    often the world mentions them."""
    people = report.get("exposure") or []
    if not people:
        return None
    fig = go.Figure(go.Scatter(
        x=[p["exposure"] for p in people], y=[p["recall"] for p in people], mode="markers",
        text=[f"{p['person']} ({p['city']}, {p['n']} mentions read)" for p in people],
        marker={"size": 7}))
    fig.update_layout(title="city latent recall per person against training exposure",
                      xaxis={"title": "exposure weight (mean 1)", "type": "log"},
                      yaxis={"title": "recall of the city's best latent", "range": [0, 1.02]},
                      height=400)
    return fig
