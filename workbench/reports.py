"""Writing an analysis result: its JSON (atomically) and plotly figures beside it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from workbench.checkpoints import write_json_atomic

FigureMaker = Callable[[dict[str, Any]], go.Figure]


def write_report(report: dict[str, Any], out: Path, figures: dict[str, FigureMaker],
                 overwrite: bool = False) -> list[Path]:
    """Write `report` to `out` and each figure to `out` with its suffix (`.fig.json`);
    refuse an existing `out` unless `overwrite`. Returns the paths written."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    paths = [out]
    for suffix, make in figures.items():
        path = out.with_suffix(suffix)
        make(report).write_json(str(path))
        paths.append(path)
    return paths
