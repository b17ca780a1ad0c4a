"""Plotly figure of a probe sweep: accuracy (with its 95 % interval), control accuracy,
selectivity and the majority baseline against layer, one panel per task."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_COLORS = {"syntax": "#1f77b4", "semantics": "#2ca02c", "facts": "#d62728"}


def sweep_figure(report: dict[str, Any]) -> go.Figure:
    """One panel per task; the title line says where each kind peaks."""
    tasks = report["tasks"]
    names = list(tasks)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    titles = [f"{n} ({tasks[n]['kind']}, n={tasks[n]['n']})" for n in names]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True,
                        vertical_spacing=0.12 if rows > 1 else 0.2)
    for i, name in enumerate(names):
        t = tasks[name]
        r, c = i // cols + 1, i % cols + 1
        layers = [x["layer"] for x in t["layers"]]
        acc = [x["accuracy"] for x in t["layers"]]
        lo = [x["accuracy"] - x["ci"][0] for x in t["layers"]]
        hi = [x["ci"][1] - x["accuracy"] for x in t["layers"]]
        color = _COLORS.get(t["kind"], "#444")
        first = i == 0
        fig.add_trace(go.Scatter(
            x=layers, y=acc, mode="lines+markers", name="accuracy", legendgroup="acc",
            showlegend=first, line={"color": color},
            error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
            hovertemplate="layer %{x}<br>accuracy %{y:.3f}<extra>" + name + "</extra>"),
            row=r, col=c)
        fig.add_trace(go.Scatter(
            x=layers, y=[x["control_accuracy"] for x in t["layers"]], mode="lines",
            name="control task", legendgroup="ctrl", showlegend=first,
            line={"color": "#7f7f7f", "dash": "dot"}), row=r, col=c)
        fig.add_trace(go.Scatter(
            x=layers, y=[x["selectivity"] for x in t["layers"]], mode="lines+markers",
            name="selectivity", legendgroup="sel", showlegend=first,
            line={"color": "#ff7f0e", "dash": "dash"}), row=r, col=c)
        fig.add_trace(go.Scatter(
            x=[layers[0], layers[-1]], y=[t["majority_baseline"]] * 2, mode="lines",
            name="majority class", legendgroup="maj", showlegend=first,
            line={"color": "#000", "width": 1}), row=r, col=c)
        fig.add_vline(x=t["center_of_gravity"], line={"color": color, "width": 1,
                                                      "dash": "longdash"}, row=r, col=c)
    summary = report.get("summary", {}).get("text", "").split("\n")
    title = f"Probes of {report.get('model') or 'the model'} ({report.get('probe')})"
    line = next((x for x in summary if "account" in x), summary[0] if summary else "")
    if line:
        title += f"<br><sup>{line}</sup>"
    fig.update_layout(title=title, template="plotly_white", height=320 * rows + 120,
                      legend={"orientation": "h", "y": -0.08})
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(range=[-0.1, 1.02])
    return fig
