"""Plotly figures of a belief report: causal trace, pressure ladder, edit metrics."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from beliefs.metrics import METRICS
from circuits.figures import causal_trace_figure
from circuits.tracing import TraceResult
from workbench.plots import palette

_ROLE_LABELS = {"subject_first": "first subject token", "subject_middle": "middle subject",
                "subject_last": "last subject token", "after_subject": "after subject",
                "last_token": "last token"}


def trace_figures(report: dict[str, Any]) -> go.Figure:
    """Mean indirect effect by token role and layer (one panel per restored kind, one colour
    scale for all)."""
    trace = report.get("trace")
    if not trace:
        return go.Figure(layout={"title": "no causal trace in this report"})
    kinds = list(trace["indirect_effect"])
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True)
    x = [_ROLE_LABELS[r] for r in trace["roles"]]
    for i, kind in enumerate(kinds):
        z = trace["indirect_effect"][kind]
        fig.add_trace(go.Heatmap(z=z, x=x, y=list(range(len(z))), coloraxis="coloraxis",
                                 hovertemplate="layer %{y}<br>%{x}<br>"
                                 "indirect effect %{z:.3f}<extra></extra>"), row=1, col=i + 1)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_yaxes(dtick=1)
    fig.update_layout(coloraxis={"colorscale": "Purples", "colorbar": {
        "title": {"text": "indirect effect (p)", "side": "right"}}})
    fig.update_layout(title=f"Causal trace over {trace['n']} facts: p(object) restored minus "
                            f"corrupted (MLP peak at the last subject token: layer "
                            f"{trace['peak_layer']})", template="plotly_white", height=420)
    return fig


def example_trace_figure(report: dict[str, Any]) -> go.Figure:
    """The full layers x tokens trace of the first traced fact."""
    trace = report.get("trace")
    if not trace:
        return go.Figure(layout={"title": "no causal trace in this report"})
    return causal_trace_figure(TraceResult.from_dict(trace["example"]))


def ladder_figure(report: dict[str, Any]) -> go.Figure:
    """p(new) and p(old) against pressure level (mean over beliefs; thin lines: each one),
    and the share of beliefs flipped by each level."""
    icl = report["methods"].get("icl")
    if not icl:
        return go.Figure(layout={"title": "no pressure ladder in this report"})
    levels = icl["levels"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["p(new) and p(old) per level",
                                                        "share stating the new object"])
    for i, row in enumerate(icl["beliefs"][:50]):
        fig.add_trace(go.Scatter(x=levels, y=[row["levels"][lv]["p_new"] for lv in levels],
                                 mode="lines", line={"width": 0.5, "color": "lightgray"},
                                 hoverinfo="text", name="p_new of each belief (thin)",
                                 legendgroup="each", showlegend=i == 0,
                                 text=f"{row['subject']} {row['relation']} -> {row['new']}"),
                      row=1, col=1)
    for key, color in (("p_new", "crimson"), ("p_old", "royalblue")):
        fig.add_trace(go.Scatter(x=levels, y=[icl[key][lv] for lv in levels],
                                 name=f"{key} (mean)", mode="lines+markers",
                                 line={"width": 3, "color": color}), row=1, col=1)
    fig.add_trace(go.Bar(x=levels, y=[icl["flipped_by"][lv] for lv in levels],
                         name="flipped by level", marker_color="#2ca02c"), row=1, col=2)
    if any(v is not None for v in icl["others_kept"].values()):
        fig.add_trace(go.Scatter(x=levels, y=[icl["others_kept"][lv] for lv in levels],
                                 name="other facts kept", mode="lines+markers",
                                 line={"color": "#9467bd"}), row=1, col=2)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_yaxes(title_text="probability", row=1, col=1)
    fig.update_yaxes(title_text="share of beliefs", row=1, col=2)
    fig.update_layout(title="In-context pressure ladder", template="plotly_white", height=420)
    return fig


def metrics_figure(report: dict[str, Any]) -> go.Figure:
    """Every edit metric per method with its 95 % interval (fluency on a second axis), each
    method one colour in both panels."""
    methods = [m for m in report["methods"] if m != "icl"]
    colours = dict(zip(methods, palette(len(methods))))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.8, 0.2],
                        subplot_titles=["edit metrics (share, 95 % CI)",
                                        "validation loss change (nats)"])
    shares = [m for m in METRICS if m != "fluency_delta"]
    for method in methods:
        agg = report["methods"][method]
        ys = [agg.get(m) for m in shares]
        lo = [(agg[m] - agg["ci"][m][0]) if agg.get(m) is not None else 0 for m in shares]
        hi = [(agg["ci"][m][1] - agg[m]) if agg.get(m) is not None else 0 for m in shares]
        fig.add_trace(go.Bar(x=shares, y=ys, name=method, legendgroup=method,
                             marker_color=colours[method],
                             error_y={"type": "data", "array": hi, "arrayminus": lo}),
                      row=1, col=1)
        flu = agg.get("fluency_delta")
        if flu is not None:
            ci = agg["ci"]["fluency_delta"]
            fig.add_trace(go.Bar(x=[method], y=[flu], showlegend=False, name=method,
                                 legendgroup=method, marker_color=colours[method],
                                 error_y={"type": "data", "array": [ci[1] - flu],
                                          "arrayminus": [flu - ci[0]]}), row=1, col=2)
    fig.update_yaxes(title_text="share of edits", row=1, col=1)
    fig.update_yaxes(title_text="nats", row=1, col=2)
    fig.update_layout(barmode="group", template="plotly_white", height=420,
                      title=f"Belief edits at layer {report.get('layer')}")
    return fig


_BUCKET_COLORS = {"low": "#d62728", "mid": "#ff7f0e", "high": "#2ca02c", None: "gray"}


def strength_figure(report: dict[str, Any]) -> go.Figure:
    """Strength (margin) against training mentions, and the ladder's flip level against
    strength (never flipped = the level above the last), coloured by exposure bucket."""
    strength = report.get("strength", {})
    beliefs = report["elicit"]["beliefs"]
    if not strength.get("n_with_exposure"):
        return go.Figure(layout={"title": "no exposure known for these facts (real facts)"})
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        f"strength vs exposure (Spearman ρ {_fmt(strength.get('rho_exposure_margin'))})",
        f"flip level vs strength (Spearman ρ {_fmt(strength.get('rho_margin_flip'))})"])
    for bucket, color in _BUCKET_COLORS.items():
        mine = [b for b in beliefs if b.get("bucket") == bucket and b.get("exposure")]
        if mine:
            fig.add_trace(go.Scatter(
                x=[b.get("mentions") or b["exposure"] for b in mine],
                y=[b["margin"] for b in mine], mode="markers", name=f"{bucket} exposure",
                marker={"color": color}, legendgroup=str(bucket),
                text=[f"{b['subject']} | {b['relation']}" for b in mine]), row=1, col=1)
    icl = report["methods"].get("icl")
    if icl:
        levels = list(icl["levels"]) + ["never"]
        for bucket, color in _BUCKET_COLORS.items():
            rows = [r for r in icl["beliefs"] if r.get("bucket") == bucket and "margin" in r]
            if rows:
                fig.add_trace(go.Scatter(
                    x=[r["margin"] for r in rows],
                    y=[levels[len(levels) - 1 if r["flip_index"] is None else r["flip_index"]]
                       for r in rows],
                    mode="markers", marker={"color": color}, legendgroup=str(bucket),
                    showlegend=False, text=[f"{r['subject']} | {r['relation']}" for r in rows]),
                    row=1, col=2)
        fig.update_yaxes(categoryorder="array", categoryarray=levels, row=1, col=2)
    fig.update_xaxes(type="log", title_text="training mentions", row=1, col=1)
    fig.update_yaxes(title_text="margin (nats)", row=1, col=1)
    fig.update_xaxes(title_text="margin (nats)", row=1, col=2)
    fig.update_layout(title="Belief strength from exposure", template="plotly_white",
                      height=420)
    return fig


_REGIME_METRICS = ("efficacy", "paraphrase", "specificity", "ripple_kept", "portability")


def regimes_figure(report: dict[str, Any]) -> go.Figure:
    """MEMIT's batch edits by size, and the sequential edits over time: efficacy of all
    edits so far and of the first ones, with and without AlphaEdit's projection."""
    regimes = report.get("regimes") or {}
    if "batch" not in regimes and "sequential" not in regimes:
        return go.Figure(layout={"title": "no batch or sequential edits in this report "
                                          "(run with --regimes batch,sequential)"})
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        "batch edits: metrics by facts edited at once",
        "sequential edits: efficacy after each measurement"])
    colours = dict(zip(_REGIME_METRICS, palette(len(_REGIME_METRICS))))
    batch = regimes.get("batch") or []
    for m in _REGIME_METRICS:
        fig.add_trace(go.Scatter(x=[b["size"] for b in batch], y=[b.get(m) for b in batch],
                                 mode="lines+markers", name=m, marker_color=colours[m],
                                 hovertemplate=f"{m} %{{y:.3f}}<br>%{{x}} facts<extra></extra>"),
                      row=1, col=1)
    runs = (regimes.get("sequential") or {}).get("runs", {})
    for (name, run), colour in zip(runs.items(), palette(len(runs)), strict=False):
        xs = [p["edits_so_far"] for p in run["points"]]
        labels = {"efficacy": "all edits so far", "first_efficacy": "first edits",
                  "first_stated": "first edits stated (top-1)"}
        for key, dash in (("efficacy", "solid"), ("first_efficacy", "dot"),
                          ("first_stated", "dash")):
            fig.add_trace(go.Scatter(x=xs, y=[p.get(key) for p in run["points"]],
                                     name=f"{name}: {labels[key]}", mode="lines+markers",
                                     line={"dash": dash, "color": colour}), row=1, col=2)
    fig.update_xaxes(title_text="facts edited at once", type="log", row=1, col=1)
    fig.update_xaxes(title_text="edits made", row=1, col=2)
    fig.update_yaxes(title_text="share", range=[0, 1.05])
    fig.update_layout(template="plotly_white", height=420,
                      title=f"MEMIT edit regimes on {regimes.get('relation')} (layers "
                            f"{regimes.get('layers')})")
    return fig


def _fmt(r: dict[str, Any] | None) -> str:
    if not r or r.get("value") is None:
        return "n/a"
    ci = r.get("ci")
    return f"{r['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


FIGURES = {".trace.fig.json": trace_figures, ".trace_example.fig.json": example_trace_figure,
           ".ladder.fig.json": ladder_figure, ".metrics.fig.json": metrics_figure,
           ".strength.fig.json": strength_figure, ".regimes.fig.json": regimes_figure}
