"""Figures of the in-context learning report: accuracy and log-probability of the right
answer against the number of demonstrations, one line per task (95 % intervals as error bars,
chance dotted), and accuracy at the most demonstrations over a run's checkpoints."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

Report = dict[str, Any]


def _colour(i: int) -> str:
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def _vs_k(report: Report, metric: str, title: str, yaxis: str) -> go.Figure:
    fig = go.Figure()
    for i, (task, t) in enumerate(report["tasks"].items()):
        ks = sorted(t["k"], key=int)
        y = [t["k"][k][metric] for k in ks]
        ci = [t["k"][k][f"{metric}_ci"] for k in ks]
        fig.add_trace(go.Scatter(
            x=[int(k) for k in ks], y=y, mode="lines+markers", name=f"{task} ({t['kind']})",
            line={"color": _colour(i), "dash": "solid" if t["kind"] == "known" else "dash"},
            error_y={"type": "data", "symmetric": False,
                     "array": [c[1] - v for c, v in zip(ci, y)],
                     "arrayminus": [v - c[0] for c, v in zip(ci, y)]}))
        if metric == "accuracy":
            fig.add_trace(go.Scatter(x=[int(ks[0]), int(ks[-1])], y=[t["chance"]] * 2,
                                     mode="lines", name=f"{task} chance", showlegend=False,
                                     line={"color": _colour(i), "dash": "dot", "width": 1}))
    fig.update_layout(title=title, xaxis_title="demonstrations (k)", yaxis_title=yaxis)
    return fig


def accuracy_figure(report: Report) -> go.Figure:
    return _vs_k(report, "accuracy", "Few-shot accuracy (chance dotted)", "accuracy")


def logprob_figure(report: Report) -> go.Figure:
    return _vs_k(report, "logprob", "Log-probability of the right answer", "mean log p (nats)")


def checkpoints_figure(report: Report) -> go.Figure | None:
    records = report.get("checkpoints")
    if not records:
        return None
    k = str(max(report["config"]["ks"]))
    fig = go.Figure()
    for i, task in enumerate(report["tasks"]):
        fig.add_trace(go.Scatter(
            x=[r["step"] for r in records], y=[r["tasks"][task]["k"][k]["accuracy"]
                                               for r in records],
            mode="lines+markers", name=task, line={"color": _colour(i)}))
    fig.update_layout(title=f"{k}-shot accuracy over training", xaxis_title="step",
                      yaxis_title="accuracy")
    return fig


def mechanism_figure(report: Report) -> go.Figure | None:
    mech = report.get("mechanism") or {}
    if "ablated" not in mech:
        return None
    k = str(max(report["config"]["ks"]))
    names = list(report["tasks"])
    fig = go.Figure()
    for label, values in (("clean", [report["tasks"][t]["k"][k]["accuracy"] for t in names]),
                          (f"induction heads ablated ({', '.join(mech['induction_heads'])})",
                           [mech["ablated"][t][k] for t in names]),
                          (f"control ablated ({', '.join(mech['control_heads'])})",
                           [mech["control"][t][k] for t in names])):
        fig.add_trace(go.Bar(x=names, y=values, name=label))
    fig.update_layout(title=f"{k}-shot accuracy with the induction heads mean-ablated",
                      yaxis_title="accuracy", barmode="group")
    return fig


FIGURES = {".accuracy.fig.json": accuracy_figure, ".logprob.fig.json": logprob_figure,
           ".checkpoints.fig.json": checkpoints_figure,
           ".mechanism.fig.json": mechanism_figure}
