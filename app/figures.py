"""Plotly figures the dashboard adds to those of the packages (`circuits.figures`,
`probe.figures`, `workbench.plots`, which it reuses): every head at once, one head with its
induction stripe, composition scores, the logit lens, a PCA scatter, one probe task, and one
few-shot prompt's candidates and induction-head attention. Each passes
`workbench.figcheck.figure_problems`."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float, Int
from torch import Tensor

from circuits.figures import attention_figure
from workbench.plots import palette

GAP = 1  # empty cells between the tiles of the head grid
BLUES = "Blues"


def token_labels(tokens: list[str], start: int = 0) -> list[str]:
    """`pos:token` axis labels (unique, so that plotly keeps repeated tokens apart)."""
    return [f"{start + i}:{t}" for i, t in enumerate(tokens)]


def head_grid_figure(pattern: Float[Tensor, "layer head query key"],
                     scores: Float[Tensor, "layer head"] | None = None,
                     selected: tuple[int, int] | None = None) -> go.Figure:
    """Every head's pattern as one tiled heatmap (a single trace: fast for 144 heads), rows
    are layers, columns heads; `scores` (e.g. the induction-stripe score) go in the titles."""
    n_layers, n_heads, n_q, n_k = pattern.shape
    h, w = n_q + GAP, n_k + GAP
    z = np.full((n_layers * h - GAP, n_heads * w - GAP), np.nan, dtype=np.float32)
    for layer in range(n_layers):
        for head in range(n_heads):
            z[layer * h:layer * h + n_q, head * w:head * w + n_k] = pattern[layer, head].numpy()
    fig = go.Figure(go.Heatmap(z=z, colorscale=BLUES, zmin=0, zmax=1,
                               colorbar={"title": {"text": "attention weight", "side": "right"},
                                         "thickness": 12},
                               hovertemplate="weight %{z:.3f}<extra></extra>"))
    for layer in range(n_layers):
        for head in range(n_heads):
            text = f"L{layer}H{head}"
            if scores is not None:
                text += f" {float(scores[layer, head]):.2f}"
            bold = selected == (layer, head)
            fig.add_annotation(x=head * w + (n_k - 1) / 2, y=layer * h - 0.5, text=text,
                               showarrow=False, yanchor="bottom",
                               font={"size": 11, "color": "#d62728" if bold else "#333"})
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(template="plotly_white", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      height=max(260, 70 + 160 * n_layers * min(1.0, 8 / n_heads)))
    return fig


def head_figure(pattern: Float[Tensor, "query key"], tokens: list[str], start: int = 0,
                stripe: Int[Tensor, "n 2"] | None = None, title: str = "") -> go.Figure:
    """One head enlarged (`circuits.figures.attention_figure`: tokens on both axes, weight on
    hover), positions counted from `start`; `stripe` cells (absolute positions) outlined."""
    labels = token_labels(tokens, start)
    fig = attention_figure(pattern.numpy(), tokens, title=title)
    fig.update_traces(x=labels, y=labels, selector={"type": "heatmap"})
    if stripe is not None and len(stripe):
        shown = [(q, k) for q, k in stripe.tolist()
                 if start <= q < start + len(tokens) and start <= k < start + len(tokens)]
        if shown:
            fig.add_trace(go.Scatter(
                x=[labels[k - start] for _, k in shown], y=[labels[q - start] for q, _ in shown],
                mode="markers", name="induction stripe",
                marker={"symbol": "square-open", "size": 9, "color": "#d62728"},
                hovertemplate="induction stripe<br>query %{y}<br>key %{x}<extra></extra>"))
    n = len(tokens)
    fig.update_layout(height=min(900, max(420, 14 * n + 200)),
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0,
                              "yanchor": "bottom"})
    fig.update_xaxes(tickangle=-60)
    return fig


def layer_head_figure(grid: Float[Tensor, "layer head"], title: str,
                      scale_title: str = "score") -> go.Figure:
    """A `[layer, head]` score as a heatmap (hover: the head's name and value); its colour
    bar is titled `scale_title`."""
    z = grid.numpy()
    fig = go.Figure(go.Heatmap(z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])),
                               colorscale=BLUES,
                               colorbar={"title": {"text": scale_title, "side": "right"}},
                               hovertemplate="L%{y}H%{x}: %{z:.3f}"
                                                               "<extra></extra>"))
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
    fig.update_layout(title=title, template="plotly_white", height=120 + 45 * z.shape[0])
    return fig


def composition_figure(report: dict[str, Any], mode: str) -> go.Figure:
    """`mode` (Q, K, V, K_path or K_path_all) composition of every earlier head (rows) into
    every later head (columns) of an induction report; pairs within one layer or backwards
    are blank."""
    comp = np.asarray(report["composition"][mode], dtype=np.float64)  # [L, H, L, H]
    n_layers, n_heads = comp.shape[:2]
    flat = comp.reshape(n_layers * n_heads, n_layers * n_heads)
    layer_of = np.repeat(np.arange(n_layers), n_heads)
    flat[layer_of[:, None] >= layer_of[None, :]] = np.nan
    names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    patched = {"K_path": "direct-path", "K_path_all": "all-path"}.get(mode)
    what = (f"induction-score drop ({patched} patching of the keys)" if patched
            else f"{mode}-composition")
    fig = go.Figure(go.Heatmap(z=flat, x=names, y=names, colorscale=BLUES,
                               colorbar={"title": {"text": "score drop" if patched else
                                                   f"{mode}-composition", "side": "right"}},
                               hovertemplate="%{y} -> %{x}<br>" + what
                               + " %{z:.3f}<extra></extra>"))
    fig.update_yaxes(title_text="earlier head (writes)", autorange="reversed")
    fig.update_xaxes(title_text="later head (reads)")
    fig.update_layout(title=(f"K-composition by {patched} patching of the keys"
                             if patched else f"{mode}-composition scores"),
                      template="plotly_white",
                      height=max(420, 22 * len(names) + 160))
    return fig


def logit_lens_figure(lens: Any, top_tokens: list[list[list[str]]], start: int = 0
                      ) -> go.Figure:
    """The top-1 token read from the residual stream after each layer (rows) at each
    position (columns), coloured by its probability; hover shows the top k."""
    probs = lens.top_probs.numpy()  # [point, pos, k]
    n_points, n_pos, k = probs.shape
    text = [[top_tokens[p][i][0] for i in range(n_pos)] for p in range(n_points)]
    hover = [["<br>".join(f"{top_tokens[p][i][j]!r} {probs[p, i, j]:.3f}" for j in range(k))
              for i in range(n_pos)] for p in range(n_points)]
    fig = go.Figure(go.Heatmap(
        z=probs[:, :, 0], x=token_labels(lens.tokens, start), y=lens.layers, text=text,
        texttemplate="%{text}", customdata=hover, colorscale=BLUES, zmin=0, zmax=1,
        colorbar={"title": "p(top 1)"},
        hovertemplate="%{y} at %{x}<br>%{customdata}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="residual stream after")
    fig.update_xaxes(title_text="input position (prediction of the next token)",
                     tickangle=-60)
    fig.update_layout(template="plotly_white", height=160 + 40 * n_points,
                      title="Logit lens: the top token at each layer")
    return fig


def pca_figure(coords: Float[Tensor, "n 2"], labels: list[str], explained: Float[Tensor, " 2"],
               title: str) -> go.Figure:
    """A 2-D PCA scatter, one trace per label value, each its own colour (`palette`)."""
    xy = coords.numpy()
    fig = go.Figure()
    arr = np.asarray(labels)
    values = sorted(set(labels), key=lambda v: (v == "none", v))
    colours = palette(len(values))
    for i, value in enumerate(values):
        mask = arr == value
        fig.add_trace(go.Scattergl(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=value,
                                   marker={"size": 4, "opacity": 0.7,
                                           "color": colours[i % len(colours)]}))
    fig.update_xaxes(title_text=f"PC1 ({float(explained[0]):.0%} of variance)")
    fig.update_yaxes(title_text=f"PC2 ({float(explained[1]):.0%} of variance)")
    fig.update_layout(title=title, template="plotly_white", height=560)
    return fig


def probe_task_figure(report: dict[str, Any], task: str) -> go.Figure:
    """One probe task: accuracy and selectivity against layer, each with its 95 % interval
    as a pale band, the control accuracy and the majority baseline (all in the legend)."""
    t = report["tasks"][task]
    rows = t["layers"]
    x = [r["layer"] for r in rows]
    fig = go.Figure()
    for key, ci, name, color, band in (
            ("accuracy", "ci", "accuracy", "#1f77b4", "rgba(31,119,180,0.2)"),
            ("selectivity", "selectivity_ci", "selectivity", "#ff7f0e", "rgba(255,127,14,0.2)")):
        lo, hi = [r[ci][0] for r in rows], [r[ci][1] for r in rows]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", line={"width": 0},
                                 fillcolor=band, hoverinfo="skip", mode="lines",
                                 name=f"{name} 95% interval"))
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rows], mode="lines+markers",
                                 name=name, line={"color": color},
                                 hovertemplate="layer %{x}<br>" + name + " %{y:.3f}"
                                               "<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[r["control_accuracy"] for r in rows], mode="lines",
                             name="control task", line={"color": "#7f7f7f", "dash": "dot"}))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[t["majority_baseline"]] * 2, mode="lines",
                             name="majority class", line={"color": "#000", "width": 1},
                             hovertemplate="majority class %{y:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="layer (0 = embedding)", dtick=1)
    fig.update_yaxes(range=[-0.1, 1.02], title_text="share of examples")
    fig.update_layout(title=f"{task} ({t['kind']}, n={t['n']}, best layer {t['best_layer']})",
                      template="plotly_white", height=420)
    return fig


def candidates_figure(candidates: list[str], probs: list[float], answer: str) -> go.Figure:
    """The model's probability of each candidate answer of a few-shot prompt, the right one
    green (an annotation says so)."""
    fig = go.Figure(go.Bar(x=candidates, y=probs, name="probability",
                           marker_color=["#2ca02c" if c == answer else "#1f77b4"
                                         for c in candidates]))
    fig.add_annotation(text=f"green: the right answer ({answer})", xref="paper", yref="paper",
                       x=1, y=1, xanchor="right", yanchor="bottom", showarrow=False)
    fig.update_layout(title="probability of each candidate", yaxis={"range": [0, 1]},
                      yaxis_title="probability", template="plotly_white", height=300)
    return fig


def icl_attention_figure(tokens: list[str], attention: dict[str, list[float]],
                         match: list[int]) -> go.Figure:
    """Each head's attention from the query's last token to every position of a few-shot
    prompt, with the answer of the demonstration whose input is the query's (`match`,
    `icl.mechanism.answer_positions`) dotted; without such a demonstration (tasks whose
    queries never repeat a demonstration's input) an annotation says so."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    colours = palette(len(attention))
    fig = go.Figure([go.Bar(x=labels, y=row, name=head, marker_color=colours[i])
                     for i, (head, row) in enumerate(attention.items())])
    what = "answer of the matching demonstration"
    for i, pos in enumerate(match):
        fig.add_vline(x=pos, line_dash="dot", line_color="green", name=f"{what} (dotted)",
                      legendgroup="match", showlegend=i == 0)
    if not match:
        fig.add_annotation(text="no demonstration has the query's input: nothing to mark",
                           xref="paper", yref="paper", x=1, y=1, xanchor="right",
                           yanchor="bottom", showarrow=False, font={"color": "#555"})
    fig.update_xaxes(categoryorder="array", categoryarray=labels, tickangle=-60)
    fig.update_layout(title="induction heads' attention from the query",
                      yaxis_title="attention weight", barmode="group", height=340,
                      template="plotly_white")
    return fig
