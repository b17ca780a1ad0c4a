"""Figures of `sweep.json`: loss against N with the fitted law, every member's loss curve,
and the abilities against N or C (the discontinuous metric beside the continuous one).
`FIGURES` are written beside `sweep.json` (`sweep.loss.fig.json`, ...)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots import palette

Report = dict[str, Any]
AXIS = {"N": "non-embedding parameters N", "C": "training compute C = 6ND (FLOPs)",
        "D": "training tokens D"}
KEY = {"N": "n_params", "C": "compute", "D": "tokens"}


def law_figure(report: Report, scale: str = "N") -> go.Figure | None:
    """Final validation loss of the finished members against `scale`, with the fitted law."""
    members = [m for m in report["members"] if m["finished"] and m["final_loss"] is not None]
    if not members:
        return None
    fig = go.Figure()
    x = [m[KEY[scale]] for m in members]
    fig.add_trace(go.Scatter(x=x, y=[m["final_loss"] for m in members], mode="markers",
                             name="members", text=[m["name"] for m in members],
                             marker={"size": 9, "color": "#1f77b4"}))
    law = report["laws"].get(scale)
    if law is not None:
        grid = np.geomspace(min(x), max(x), 50)
        y = law.get("e", 0.0) + law["a"] * grid ** -law["alpha"]
        fig.add_trace(go.Scatter(x=grid.tolist(), y=y.tolist(), mode="lines",
                                 name=f"L = {law['a']:.3g} {scale}^-{law['alpha']:.3f}"
                                 + (f" + {law['e']:.3g}" if law.get("e") else "")
                                 + f" (R² {law['r2']:.3f})", line={"color": "#d62728"}))
    fig.update_layout(title=f"Validation loss against {scale}", xaxis_title=AXIS[scale],
                      yaxis_title="validation loss (nats)", xaxis_type="log", yaxis_type="log")
    return fig


def curves_figure(report: Report) -> go.Figure | None:
    """Every member's validation loss against training tokens."""
    if not report["members"]:
        return None
    fig = go.Figure()
    colours = palette(len(report["members"]))
    for i, m in enumerate(report["members"]):
        c = m["curve"]
        per_step = m["tokens"] / max(m["steps"], 1)
        fig.add_trace(go.Scatter(x=[max(s, 1) * per_step for s in c["val_step"]],
                                 y=c["val_loss"], mode="lines+markers", name=m["name"],
                                 line={"color": colours[i % len(colours)]}))
    fig.update_layout(title="Validation loss of every member", xaxis_title="training tokens",
                      yaxis_title="validation loss (nats)", xaxis_type="log")
    return fig


def abilities_figure(report: Report, scale: str = "N") -> go.Figure | None:
    """Every ability's progress from chance (0) to ceiling (1) against `scale`: the
    discontinuous metric on the left, the continuous one on the right."""
    abilities = report["abilities"]
    if not abilities:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("discontinuous (accuracy, share)",
                                                        "continuous (log-probability, score)"))
    colours = palette(len(abilities))
    for i, (name, a) in enumerate(abilities.items()):
        for col, metric in enumerate(("discrete", "continuous"), 1):
            rec = a[metric]
            curve = rec[scale]
            span = rec["ceiling"] - rec["chance"]
            y = [None if v is None else (v - rec["chance"]) / span for v in curve["y"]]
            fig.add_trace(go.Scatter(x=curve["x"], y=y, mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=col == 1,
                                     line={"color": colours[i % len(colours)]},
                                     hovertext=f"{rec['name']}: {curve['verdict']}"),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text=AXIS[scale])
    fig.update_yaxes(title_text="progress from chance (0) to ceiling (1)")
    fig.update_layout(title=f"Abilities against {scale}")
    return fig


def ability_figure(report: Report, name: str, scale: str = "N") -> go.Figure:
    """One ability against `scale`: its discontinuous metric beside its continuous one, each
    with its chance level dotted and its verdict in the subplot title."""
    a = report["abilities"][name]
    titles = tuple(f"{a[m]['name']}: {a[m][scale]['verdict']}" for m in ("discrete",
                                                                          "continuous"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for col, metric in enumerate(("discrete", "continuous"), 1):
        rec = a[metric]
        curve = rec[scale]
        fig.add_trace(go.Scatter(x=curve["x"], y=curve["y"], mode="lines+markers",
                                 name=rec["name"], line={"color": ("#1f77b4", "#ff7f0e")[col - 1]}),
                      row=1, col=col)
        fig.update_yaxes(title_text=rec["name"], row=1, col=col)
        if curve["x"]:
            fig.add_trace(go.Scatter(x=[min(curve["x"]), max(curve["x"])],
                                     y=[rec["chance"]] * 2, mode="lines",
                                     name="chance (dotted)", legendgroup="chance",
                                     showlegend=col == 1,
                                     line={"color": "grey", "dash": "dot", "width": 1}),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text=AXIS[scale])
    fig.update_layout(title=f"{name} against {scale}")
    return fig


FIGURES = {
    ".loss.fig.json": law_figure,
    ".curves.fig.json": curves_figure,
    ".abilities_N.fig.json": lambda r: abilities_figure(r, "N"),
    ".abilities_C.fig.json": lambda r: abilities_figure(r, "C"),
}
