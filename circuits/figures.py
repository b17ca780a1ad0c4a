"""Plotly figures of induction reports: layer x head heatmaps and score-vs-step curves."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots import colorbar_beside, model_name, palette

HEATMAPS = (("induction", "induction score"), ("prev_token", "previous-token score"),
            ("duplicate", "duplicate-token score"), ("copying", "OV copying score"),
            ("ablation_nats", "zero-ablation effect (nats)"),
            ("mean_ablation_nats", "mean-ablation effect (nats)"))
UNITS = {"ablation_nats": "nats", "mean_ablation_nats": "nats"}


def heads_figure(report: dict[str, Any]) -> go.Figure:
    """One layer x head heatmap per score, each with its colour bar; hover shows the head
    name and value."""
    n_layers, n_heads = report["n_layers"], report["n_heads"]
    estimated = any(r.get("ablation_nats", 0.0) is None for r in report["heads"])
    titles = [t + (" (estimate where<br>not ablated)" if estimated and "ablation" in k else "")
              for k, t in HEATMAPS]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles,
                        horizontal_spacing=0.11, vertical_spacing=0.17)
    for i, (key, title) in enumerate(HEATMAPS):
        z = [[0.0] * n_heads for _ in range(n_layers)]
        for r in report["heads"]:  # an ablation not measured exactly: its estimate
            value = r[key]
            if value is None:
                value = r[key.replace("_nats", "_estimate")]
            z[r["layer"]][r["head"]] = value
        row, col = i // 3 + 1, i % 3 + 1
        fig.add_trace(go.Heatmap(z=z, x=list(range(n_heads)), y=list(range(n_layers)),
                                 colorscale="Blues", name=title,
                                 colorbar=colorbar_beside(fig, row, col,
                                                          UNITS.get(key, "score")),
                                 hovertemplate=f"L%{{y}}H%{{x}}<br>{title}: %{{z:.3f}}"
                                               "<extra></extra>"),
                      row=row, col=col)
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
    found = ", ".join(report["induction_heads"]) or "none"
    fig.update_layout(title=f"Heads of {model_name(report.get('model'))} "
                            f"(induction heads: {found})", template="plotly_white",
                      height=650)
    return fig


def dynamics_figure(report: dict[str, Any]) -> go.Figure:
    """Induction score of every later-layer head, and the ICL score, against step."""
    records = report["dynamics"]["checkpoints"]
    steps = [r["step"] for r in records]
    has_icl = all("icl" in r for r in records)
    fig = make_subplots(rows=2 if has_icl else 1, cols=1, shared_xaxes=True,
                        subplot_titles=["induction score per head", "in-context-learning "
                                        "score (late minus early loss)"][: 2 if has_icl else 1])
    n_layers = len(records[0]["induction"])
    n_heads = len(records[0]["induction"][0])
    colours = palette(n_layers * n_heads)
    for layer in range(n_layers):
        for h in range(n_heads):
            fig.add_trace(go.Scatter(x=steps, y=[r["induction"][layer][h] for r in records],
                                     mode="lines+markers", name=f"L{layer}H{h}",
                                     line={"color": colours[layer * n_heads + h]},
                                     visible=True if layer > 0 or n_layers == 1
                                     else "legendonly"), row=1, col=1)
    fig.update_yaxes(title_text="induction score", row=1, col=1)
    if has_icl:
        fig.add_trace(go.Scatter(x=steps, y=[r["icl"] for r in records], mode="lines+markers",
                                 name="ICL score", line={"color": "black"}), row=2, col=1)
        fig.update_yaxes(title_text="nats", row=2, col=1)
    pc = report["dynamics"].get("phase_change", {})
    if pc.get("induction_rise"):
        for row in range(1, 3 if has_icl else 2):  # one legend entry for both panels
            fig.add_vrect(x0=pc["induction_rise"][0], x1=pc["induction_rise"][1],
                          fillcolor="orange", opacity=0.15, line_width=0, row=row, col=1,
                          name="induction scores rise (phase change)", legendgroup="rise",
                          showlegend=row == 1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="step (log; step 0 not shown)", row=2 if has_icl else 1, col=1)
    fig.update_layout(title="Phase change over training checkpoints", template="plotly_white",
                      height=650)
    return fig


def attention_figure(pattern: Any, tokens: list[str], title: str = "") -> go.Figure:
    """One head's `[query, key]` pattern as a heatmap with the tokens on both axes."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=pattern, x=labels, y=labels, colorscale="Blues",
                               colorbar={"title": {"text": "attention weight",
                                                   "side": "right"}},
                               hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}"
                                             "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="query")
    fig.update_xaxes(title_text="key")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def causal_trace_figure(result: Any) -> go.Figure:
    """`circuits.tracing.trace_figure` of a `TraceResult` made readable: one colour scale
    (from 0, titled) shared by the panels, whole-layer ticks and the subject's outline
    labelled. The numbers are those of `trace_figure`."""
    from circuits.tracing import trace_figure

    fig = trace_figure(result)
    fig.update_traces(coloraxis="coloraxis", selector={"type": "heatmap"})
    fig.update_layout(coloraxis={"colorscale": "Purples", "cmin": 0,
                                 "colorbar": {"title": {"text": f"p({result.target})",
                                                        "side": "right"}}})
    fig.update_yaxes(dtick=1)
    fig.update_shapes(name="subject", label={"text": "subject", "textposition": "top center",
                                             "font": {"size": 10}})
    return fig
