"""Plotly figures of circuit-discovery reports (`workbench.circuit/1`): the circuit graph
(layers left to right, node size by score, edge width by score, the exact-patching truth
marked), the faithfulness curves, the recovery table, and the dynamics over checkpoints."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.analysis import FigureMaker
from workbench.plots import model_name, palette

KV = ("q", "k", "v")


def node_xy(name: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """Where a node sits: layers left to right (the input at 0, block L's heads at L+1 and
    its MLP at L+1.5, the logits last), heads spread vertically."""
    base = name.split("<")[0]
    if base == "input":
        return 0.0, (n_heads - 1) / 2
    if base == "logits":
        return n_layers + 1.0, (n_heads - 1) / 2
    if base.startswith("m"):
        return int(base[1:]) + 1.5, (n_heads - 1) / 2
    layer, head = base[1:].split(".")
    index = int(head[1:])
    if head.startswith("g"):  # a key/value group sits in the middle of its query heads
        return int(layer) + 1.0, index
    return int(layer) + 1.0, index


def graph_figure(report: dict[str, Any], task: str | None = None, method: str | None = None,
                 threshold: float | None = None) -> go.Figure | None:
    """The circuit of `task` by `method` (default: the first task and method): edges whose
    |score| is at least `threshold` (default: the report's circuit), width by |score|,
    coloured by sign; nodes sized by |node score|; edges in the exact truth drawn solid,
    others dotted."""
    tasks = report.get("tasks", {})
    if not tasks:
        return None
    task = task or next(iter(tasks))
    t = tasks[task]
    method = method or report["config"]["methods"][0]
    entry = t["methods"].get(method)
    if entry is None or entry.get("edges") is None:
        return None
    g = report["graph"]
    n_layers, n_heads = g["n_layers"], g["n_heads"]
    scores = entry["edges"]
    truth = t["methods"].get("exact", {}).get("edges")
    frac = t["truth_fraction"]
    if threshold is None:
        keep = set(t.get("circuit", {}).get("edges", []))
    else:
        keep = {e for e, s in zip(g["edges"], scores) if abs(s) >= threshold}
    fig = go.Figure()
    biggest = max((abs(s) for s in scores), default=1.0) or 1.0
    groups = ("raises", "lowers", "raises, not in truth", "lowers, not in truth")
    colours = dict(zip((*groups, "nodes"), palette(5)))
    shown: set[str] = set()
    for name, s, i in zip(g["edges"], scores, range(len(scores))):
        if name not in keep:
            continue
        w, r = name.split("->")
        (x0, y0), (x1, y1) = node_xy(w, n_layers, n_heads), node_xy(r, n_layers, n_heads)
        in_truth = truth is None or abs(truth[i]) >= frac
        group = ("raises" if s >= 0 else "lowers") + ("" if in_truth else ", not in truth")
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", name=group, legendgroup=group,
            showlegend=group not in shown,
            line={"width": 1 + 8 * abs(s) / biggest,
                  "color": colours[group],
                  "dash": "solid" if in_truth else "dot"},
            hovertemplate=f"{name}<br>score {s:.3f}" + (
                "" if truth is None else f"<br>exact {truth[i]:.3f}") + "<extra></extra>"))
        shown.add(group)
    nodes = g["writers"] + ["logits"]
    node_scores = entry["nodes"] + [1.0]
    xy = [node_xy(n, n_layers, n_heads) for n in nodes]
    top = max((abs(s) for s in node_scores), default=1.0) or 1.0
    fig.add_trace(go.Scatter(
        x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text", name="nodes",
        text=nodes, textposition="top center",
        marker={"size": [8 + 24 * abs(s) / top for s in node_scores], "color": colours["nodes"]},
        hovertemplate="%{text}<br>score %{customdata:.3f}<extra></extra>",
        customdata=node_scores))
    ticks = list(range(n_layers + 2))
    labels = ["input"] + [f"block {la}" for la in range(n_layers)] + ["logits"]
    fig.update_xaxes(title_text="layer (heads at the block, MLP half a step right)",
                     tickvals=ticks, ticktext=labels)
    fig.update_yaxes(title_text="head", dtick=1)
    fig.update_layout(title=f"{task} circuit by {method} ({len(keep)} edges), "
                            f"{model_name(report.get('model'))}")
    return fig


def faithfulness_figure(report: dict[str, Any]) -> go.Figure | None:
    """Per task, the metric recovered against the fraction of edges kept, one line per
    method."""
    tasks = report.get("tasks", {})
    curves = [(task, m, e["faithfulness"]) for task, t in tasks.items()
              for m, e in t["methods"].items() if e.get("faithfulness")]
    if not curves:
        return None
    names = list(tasks)
    methods = list(dict.fromkeys(m for _, m, _ in curves))
    colours = dict(zip(methods, palette(len(methods))))
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    n_edges = report["graph"]["n_edges"]
    for task, m, c in curves:
        col = names.index(task) + 1
        fig.add_trace(go.Scatter(
            x=[k / n_edges for k in c["sizes"]], y=c["recovered"], mode="lines", name=m,
            legendgroup=m, showlegend=col == 1 or task == curves[0][0],
            line={"color": colours[m]},
            hovertemplate=f"{m}: %{{x:.3f}} of edges, recovered %{{y:.3f}}<extra></extra>"),
            row=1, col=col)
        fig.update_xaxes(title_text="fraction of edges kept", row=1, col=col)
    fig.update_yaxes(title_text="metric recovered (1 = clean)", row=1, col=1)
    fig.update_layout(title=f"faithfulness, {model_name(report.get('model'))}")
    return fig


def recovery_figure(report: dict[str, Any]) -> go.Figure | None:
    """AUROC of each method's node and edge scores against exact patching, per task."""
    rows = [(task, m, kind, e["recovery"][kind]["auroc"])
            for task, t in report.get("tasks", {}).items()
            for m, e in t["methods"].items() if m != "exact" and "recovery" in e
            for kind in ("nodes", "edges") if kind in e["recovery"]
            and e["recovery"][kind]["auroc"] is not None]
    if not rows:
        return None
    series = list(dict.fromkeys((m, kind) for _, m, kind, _ in rows))
    colours = palette(len(series))
    fig = go.Figure()
    for (m, kind), colour in zip(series, colours):
        pts = [(task, v) for task, mm, kk, v in rows if (mm, kk) == (m, kind)]
        fig.add_trace(go.Bar(x=[p[0] for p in pts], y=[p[1] for p in pts],
                             name=f"{m} {kind}", marker_color=colour))
    fig.update_yaxes(title_text="AUROC against exact patching", range=[0, 1.02])
    fig.update_layout(barmode="group",
                      title=f"recovery of the exact truth, {model_name(report.get('model'))}")
    return fig


DYNAMICS = (("total", "task effect", "metric change (corrupted - clean)"),
            ("edge_auroc", "edge AUROC against exact", "AUROC"),
            ("circuit_edges", "circuit edges", "edges"))


def dynamics_figure(report: dict[str, Any]) -> go.Figure | None:
    """Per task, over training steps: the task's total effect (a circuit appears when the
    effect does), the edge AUROC against exact patching, and the circuit's size."""
    rows = report.get("dynamics")
    if not rows:
        return None
    tasks = list(rows[0]["tasks"])
    colours = dict(zip(tasks, palette(len(tasks))))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t, _ in DYNAMICS])
    steps = [r["step"] for r in rows]
    for task in tasks:
        for col, (key, _, _) in enumerate(DYNAMICS, start=1):
            fig.add_trace(go.Scatter(
                x=steps, y=[r["tasks"][task][key] for r in rows], mode="lines+markers",
                name=task, legendgroup=task, showlegend=col == 1,
                line={"color": colours[task]}), row=1, col=col)
    for col, (_, _, unit) in enumerate(DYNAMICS, start=1):
        fig.update_xaxes(title_text="training step", row=1, col=col)
        fig.update_yaxes(title_text=unit, row=1, col=col)
    fig.update_layout(title=f"circuits over training, {model_name(report.get('model'))}")
    return fig


def _graph(report: dict[str, Any]) -> go.Figure | None:
    return graph_figure(report)


FIGURES: dict[str, FigureMaker] = {
    ".graph.fig.json": _graph, ".faithfulness.fig.json": faithfulness_figure,
    ".recovery.fig.json": recovery_figure, ".dynamics.fig.json": dynamics_figure,
}
