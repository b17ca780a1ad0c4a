"""Plotly figures of the core results (training curves, evaluation) and the helpers every
package's figures share: `palette` (enough distinct colours), `model_name` (a run's name for a
title, never a path) and `colorbar_beside` (a colour bar per subplot). Every figure passes
the figure check, `workbench.figcheck.figure_problems`.

>>> model_name("runs/demo")
'demo'
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from workbench.figcheck import MIN_AUTO_SPAN

PASS, FAIL, NO_GOAL = "#2ca02c", "#d62728", "#7f7f7f"


# ---- shared helpers -------------------------------------------------------------------------

def palette(n: int) -> list[str]:
    """`n` distinct colours: plotly's 10 up to 10 classes, `Dark24` up to 24, `Alphabet` up
    to 26, then `Dark24 + Light24` (48); beyond that colours repeat.

    Args:
        n: the number of classes.

    Returns:
        At least `n` colours when `n <= 48` (a list of hex strings).

    >>> len(palette(3)), len(set(palette(24)[:24])), palette(11)[0]
    (10, 24, '#2E91E5')
    """
    if n <= len(qualitative.Plotly):
        return list(qualitative.Plotly)
    for colours in (qualitative.Dark24, qualitative.Alphabet):
        if n <= len(colours):
            return list(colours)
    colours = list(qualitative.Dark24) + list(qualitative.Light24)
    return [colours[i % len(colours)] for i in range(n)]


def model_name(ref: str | None) -> str:
    """The name a figure title gives a model: a run's folder name, not the path some machine
    recorded (`runs/demo` -> `demo`; a checkpoint -> `demo step 512`).

    Args:
        ref: the model reference a report recorded (a path or a hub name), or None.

    Returns:
        A name without `/` ("the model" when there is none).

    >>> model_name("/tmp/x/runs/demo"), model_name("runs/demo/checkpoints/step_000512")
    ('demo', 'demo step 512')
    >>> model_name("EleutherAI/pythia-70m"), model_name(None)
    ('pythia-70m', 'the model')
    """
    if not ref:
        return "the model"
    path = Path(str(ref).rstrip("/"))
    found = re.fullmatch(r"step_?(\d+)", path.name)
    if found and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name} step {int(found.group(1))}"
    return path.name or str(ref)


def colorbar_beside(fig: go.Figure, row: int, col: int, title: str) -> dict[str, Any]:
    """A colour bar for the heatmap of subplot (`row`, `col`) of a `make_subplots` figure:
    just right of that subplot and as tall as it, so that each panel's scale sits beside it.

    Args:
        fig: a figure made by `plotly.subplots.make_subplots`.
        row: the subplot's row (from 1).
        col: the subplot's column (from 1).
        title: what the colour encodes (with its unit).

    Returns:
        The `colorbar` dict to give the heatmap.
    """
    sub = fig.get_subplot(row, col)
    x0, x1 = sub.xaxis.domain
    y0, y1 = sub.yaxis.domain
    return {"title": {"text": title, "side": "right"}, "x": x1 + 0.005, "xanchor": "left",
            "y": (y0 + y1) / 2, "yanchor": "middle", "len": y1 - y0, "thickness": 10}


# ---- the core figures -----------------------------------------------------------------------

def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a `metrics.jsonl` file (empty when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_figure(metrics_path: Path) -> go.Figure:
    """Training and validation loss against step."""
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train],
                             mode="lines", name="train loss", line={"color": "#1f77b4"}))
    fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[r["val_loss"] for r in val],
                             mode="lines+markers", name="validation loss",
                             line={"color": "#ff7f0e"}))
    steps = {r["step"] for r in records}
    if steps and max(steps) - min(steps) < MIN_AUTO_SPAN:  # a short run: whole steps only
        fig.update_xaxes(dtick=1)
    fig.update_layout(title="Training curves", xaxis_title="step", yaxis_title="loss (nats)",
                      template="plotly_white")
    return fig


def eval_figure(results: dict[str, Any], name: str | None = None) -> go.Figure:
    """Each capability's score against its own goal: bars coloured by whether the goal is
    met, the goal marked on each bar (▲ at least: higher is better; ▼ at most: lower is
    better), the goal and its direction under each name.

    Args:
        results: a `workbench eval` result (`workbench.eval/1`).
        name: the model's name for the title (default: `model_name` of the recorded model).

    Returns:
        The figure.
    """
    metrics = results["metrics"]
    labels, status = {}, {}
    for n, m in metrics.items():
        goal, direction = m.get("goal"), m.get("direction", "higher")
        if goal is None:
            labels[n], status[n] = f"{n}<br>(no goal)", "no goal (measured only)"
            continue
        sign = "≥" if direction == "higher" else "≤"
        labels[n] = f"{n}<br>goal {sign} {goal:g} ({direction} is better)"
        met = m.get("meets_goal")
        if met is None:
            met = m["value"] >= goal if direction == "higher" else m["value"] <= goal
        status[n] = "meets its goal" if met else "misses its goal"
    fig = go.Figure()
    colours = {"meets its goal": PASS, "misses its goal": FAIL,
               "no goal (measured only)": NO_GOAL}
    mark = {"meets its goal": "✓", "misses its goal": "✗", "no goal (measured only)": ""}
    for what, colour in colours.items():
        names = [n for n in metrics if status[n] == what]
        if names:
            fig.add_trace(go.Bar(x=[labels[n] for n in names],
                                 y=[metrics[n]["value"] for n in names], name=what,
                                 marker_color=colour,
                                 text=[f"{metrics[n]['value']:.3f} {mark[what]}"
                                       for n in names],
                                 textposition="outside"))
    goals = [n for n in metrics if metrics[n].get("goal") is not None]
    fig.add_trace(go.Scatter(
        x=[labels[n] for n in goals], y=[metrics[n]["goal"] for n in goals], mode="markers",
        name="goal (▲ at least, ▼ at most)",
        marker={"symbol": ["triangle-up" if metrics[n].get("direction", "higher") == "higher"
                           else "triangle-down" for n in goals],
                "size": 14, "color": "#000", "line": {"width": 1, "color": "#fff"}},
        hovertemplate="goal %{y}<extra></extra>"))
    met = sum(status[n] == "meets its goal" for n in goals)
    fig.update_xaxes(categoryorder="array", categoryarray=[labels[n] for n in metrics])
    top = max([1.0] + [float(m["value"]) for m in metrics.values()]
              + [float(metrics[n]["goal"]) for n in goals])
    fig.update_yaxes(range=[0, top * 1.12])
    fig.update_layout(title=f"What {name or model_name(results.get('model'))} knows: "
                            f"{met} of {len(goals)} goals met",
                      template="plotly_white", yaxis_title="score", barmode="overlay",
                      legend={"orientation": "h", "y": -0.35}, height=480)
    return fig
