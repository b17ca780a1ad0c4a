"""Plotly figure of a probe sweep: accuracy (with its 95 % interval), control accuracy,
selectivity, the majority baseline and the centre of gravity against layer, one panel per
task; every line is named in the legend."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots import model_name, palette

_COLORS = {"syntax": "#1f77b4", "semantics": "#2ca02c", "facts": "#d62728"}
CONTROL, SELECTIVITY, MAJORITY, GRAVITY = "#7f7f7f", "#ff7f0e", "#000000", "#8c564b"


def kind_colours(kinds: list[str]) -> dict[str, str]:
    """One colour per task kind: the usual three, then palette colours no other line uses.

    >>> kind_colours(["facts", "syntax", "other"])["other"]
    '#636EFA'
    """
    taken = set(_COLORS.values()) | {CONTROL, SELECTIVITY, MAJORITY, GRAVITY}
    spare = iter(c for c in palette(len(kinds) + len(taken)) if c.lower() not in taken)
    return {k: _COLORS.get(k) or next(spare) for k in dict.fromkeys(kinds)}


def sweep_figure(report: dict[str, Any]) -> go.Figure:
    """One panel per task; the title line says where each kind peaks. The accuracy line has
    its kind's colour (one legend entry per kind); the long-dashed vertical line is the task's
    centre of gravity (the expected layer)."""
    tasks = report["tasks"]
    names = list(tasks)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    titles = [f"{n} ({tasks[n]['kind']}, n={tasks[n]['n']})" for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True,
                        vertical_spacing=0.12 if rows > 1 else 0.2)
    colours = kind_colours([tasks[n]["kind"] for n in names])
    legend: set[str] = set()

    def first(group: str) -> bool:  # one legend entry per group, on its first line
        new = group not in legend
        legend.add(group)
        return new

    for i, name in enumerate(names):
        t = tasks[name]
        r, c = i // cols + 1, i % cols + 1
        layers = [x["layer"] for x in t["layers"]]
        acc = [x["accuracy"] for x in t["layers"]]
        lo = [x["accuracy"] - x["ci"][0] for x in t["layers"]]
        hi = [x["ci"][1] - x["accuracy"] for x in t["layers"]]
        color = colours[t["kind"]]
        group = f"acc {t['kind']}"
        fig.add_trace(go.Scatter(
            x=layers, y=acc, mode="lines+markers", name=f"accuracy ({t['kind']}, 95% CI)",
            legendgroup=group, showlegend=first(group), line={"color": color}, legendrank=1,
            error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            hovertemplate="layer %{x}<br>accuracy %{y:.3f}<extra>" + name + "</extra>"),
            row=r, col=c)
        fig.add_trace(go.Scatter(
            x=layers, y=[x["control_accuracy"] for x in t["layers"]], mode="lines",
            name="control task accuracy (dotted)", legendgroup="ctrl",
            showlegend=first("ctrl"), line={"color": CONTROL, "dash": "dot"}), row=r, col=c)
        fig.add_trace(go.Scatter(
            x=layers, y=[x["selectivity"] for x in t["layers"]], mode="lines+markers",
            name="selectivity = accuracy - control (dashed)", legendgroup="sel",
            showlegend=first("sel"), line={"color": SELECTIVITY, "dash": "dash"}),
            row=r, col=c)
        fig.add_trace(go.Scatter(
            x=[layers[0], layers[-1]], y=[t["majority_baseline"]] * 2, mode="lines",
            name="majority class (solid)", legendgroup="maj", showlegend=first("maj"),
            line={"color": MAJORITY, "width": 1}), row=r, col=c)
        fig.add_trace(go.Scatter(
            x=[t["center_of_gravity"]] * 2, y=[-0.1, 1.02], mode="lines",
            name="centre of gravity: expected layer (long dashes)", legendgroup="cog",
            showlegend=first("cog"), line={"color": GRAVITY, "width": 1, "dash": "longdash"},
            hovertemplate="centre of gravity %{x:.2f}<extra>" + name + "</extra>"),
            row=r, col=c)
    summary = report.get("summary", {}).get("text", "").split("\n")
    title = f"Probes of {model_name(report.get('model'))} ({report.get('probe')})"
    line = next((x for x in summary if "account" in x), summary[0] if summary else "")
    if line:
        title += f"<br><sup>{line}</sup>"
    fig.update_layout(title=title, template="plotly_white", height=320 * rows + 160,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.12 / rows ** 0.5,
                              "x": 0},
                      margin={"b": 120})
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(range=[-0.1, 1.02])
    fig.update_yaxes(title_text="accuracy", col=1)
    return fig
