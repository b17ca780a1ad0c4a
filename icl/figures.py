"""Figures of the in-context learning report: accuracy and log-probability of the right
answer against the number of demonstrations, one line per task (95 % intervals as error bars,
each task's chance dotted in its colour, tasks at 0 for every k named in an annotation), and
accuracy at the most demonstrations over a run's checkpoints."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from workbench.figcheck import MIN_AUTO_SPAN
from workbench.plots import palette

Report = dict[str, Any]


def _k_ticks(fig: go.Figure, ks: list[int]) -> None:
    """Ticks at the measured k (whole numbers, never 0.5)."""
    fig.update_xaxes(tickmode="array", tickvals=sorted(set(ks)))


def _vs_k(report: Report, metric: str, title: str, yaxis: str) -> go.Figure:
    fig = go.Figure()
    tasks = report["tasks"]
    colours = palette(len(tasks))
    all_ks: list[int] = []
    for i, (task, t) in enumerate(tasks.items()):
        ks = sorted(t["k"], key=int)
        all_ks += [int(k) for k in ks]
        y = [t["k"][k][metric] for k in ks]
        ci = [t["k"][k][f"{metric}_ci"] for k in ks]
        name = f"{task} ({t['kind']})"
        fig.add_trace(go.Scatter(
            x=[int(k) for k in ks], y=y, mode="lines+markers", name=name, legendgroup=task,
            line={"color": colours[i], "dash": "solid" if t["kind"] == "known" else "dash"},
            error_y={"type": "data", "symmetric": False,
                     "array": [c[1] - v for c, v in zip(ci, y)],
                     "arrayminus": [v - c[0] for c, v in zip(ci, y)]}))
        if metric == "accuracy":
            fig.add_trace(go.Scatter(x=[int(ks[0]), int(ks[-1])], y=[t["chance"]] * 2,
                                     mode="lines", name=f"{task} chance", showlegend=False,
                                     legendgroup=task, hoverinfo="name",
                                     line={"color": colours[i], "dash": "dot", "width": 1}))
    if metric == "accuracy":
        zero = [task for task, t in tasks.items()
                if t["k"] and all(v["accuracy"] == 0 for v in t["k"].values())]
        if zero:
            fig.add_annotation(text=f"0.00 at every k: {', '.join(zero)}", xref="paper",
                               yref="paper", x=0, y=1, xanchor="left", yanchor="bottom",
                               showarrow=False, font={"color": "#d62728"})
    _k_ticks(fig, all_ks)
    fig.update_layout(title=title, xaxis_title="demonstrations (k)", yaxis_title=yaxis,
                      template="plotly_white")
    return fig


def accuracy_figure(report: Report) -> go.Figure:
    """Few-shot accuracy against k per task; dotted, in the task's colour: its chance."""
    return _vs_k(report, "accuracy", "Few-shot accuracy (chance dotted)", "accuracy")


def logprob_figure(report: Report) -> go.Figure:
    """Mean log-probability of the right answer against k per task."""
    return _vs_k(report, "logprob", "Log-probability of the right answer", "mean log p (nats)")


def checkpoints_figure(report: Report) -> go.Figure | None:
    """Accuracy at the most demonstrations per task over the run's checkpoints (None when
    the report measured no checkpoints)."""
    records = report.get("checkpoints")
    if not records:
        return None
    k = str(max(report["config"]["ks"]))
    fig = go.Figure()
    colours = palette(len(report["tasks"]))
    steps = [r["step"] for r in records]
    for i, task in enumerate(report["tasks"]):
        fig.add_trace(go.Scatter(
            x=steps, y=[r["tasks"][task]["k"][k]["accuracy"] for r in records],
            mode="lines+markers", name=task, line={"color": colours[i]}))
    if max(steps) - min(steps) < MIN_AUTO_SPAN:  # one or a few close checkpoints
        fig.update_xaxes(tickmode="array", tickvals=sorted(set(steps)))
    fig.update_layout(title=f"{k}-shot accuracy over training", xaxis_title="step",
                      yaxis_title="accuracy", template="plotly_white")
    return fig


def mechanism_figure(report: Report) -> go.Figure | None:
    """Accuracy at the most demonstrations per task: clean, with the induction heads
    mean-ablated, and with as many control heads ablated (None without a mechanism part)."""
    mech = report.get("mechanism") or {}
    if "ablated" not in mech:
        return None
    k = str(max(report["config"]["ks"]))
    names = list(report["tasks"])
    fig = go.Figure()
    for (label, values), colour in zip((
            ("clean", [report["tasks"][t]["k"][k]["accuracy"] for t in names]),
            (f"induction heads ablated ({', '.join(mech['induction_heads'])})",
             [mech["ablated"][t][k] for t in names]),
            (f"control ablated ({', '.join(mech['control_heads'])})",
             [mech["control"][t][k] for t in names])), ("#1f77b4", "#d62728", "#7f7f7f")):
        fig.add_trace(go.Bar(x=names, y=values, name=label, marker_color=colour))
    fig.update_layout(title=f"{k}-shot accuracy with the induction heads mean-ablated",
                      yaxis_title="accuracy", barmode="group", template="plotly_white")
    return fig


FIGURES = {".accuracy.fig.json": accuracy_figure, ".logprob.fig.json": logprob_figure,
           ".checkpoints.fig.json": checkpoints_figure,
           ".mechanism.fig.json": mechanism_figure}
