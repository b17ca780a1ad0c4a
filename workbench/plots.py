"""Plotly figures of the core results (training curves, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go


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
                             mode="lines", name="train loss"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[r["val_loss"] for r in val],
                             mode="lines+markers", name="validation loss"))
    fig.update_layout(title="Training curves", xaxis_title="step", yaxis_title="loss (nats)",
                      template="plotly_white")
    return fig


def eval_figure(results: dict[str, Any]) -> go.Figure:
    """Each capability's score against its goal."""
    metrics = results["metrics"]
    names = list(metrics)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[metrics[n]["value"] for n in names], name="measured"))
    fig.add_trace(go.Scatter(x=names, y=[metrics[n].get("goal") for n in names], mode="markers",
                             marker={"symbol": "line-ew-open", "size": 40}, name="goal"))
    fig.update_layout(title=f"What {results['model']} knows", template="plotly_white",
                      yaxis_title="score")
    return fig
