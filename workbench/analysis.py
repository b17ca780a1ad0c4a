"""What every analysis shares: where its report goes, how it is written, and how a model
reference's corpus is found.

Every analysis (induction heads, probes, belief tests, and what comes later) has one shape:

- a `Config` dataclass (`InductionConfig`, `LayersConfig`, `BeliefsConfig`);
- `run(model, corpus, cfg) -> Report` on a loaded model (`circuits.induction.run`,
  `probe.layers.run`, `beliefs.suite.run`);
- `from_ref(ref, cfg, ...)`: loads the model and its corpus, then calls `run`;
- its `KIND` (the report's file name), `SCHEMA` and `FIGURES`; the report is written by
  `write_report(report, report_path(ref, KIND), FIGURES)`.

The `workbench` subcommand, the notebooks and the dashboard call exactly these.

>>> report_path("gpt2", "probe").as_posix()  # a hub name; a run writes under its folder
'runs/gpt2/analyses/probe.json'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.models.checkpoints import write_json_atomic, write_text_atomic
from workbench.models.info import corpus_of, output_dir_of

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.world.loader import Corpus

Report = dict[str, Any]
"""An analysis result: JSON-ready, with a `schema` key, its inputs and its numbers."""
FigureMaker = Callable[[Report], "go.Figure | None"]
"""Makes one figure of a report; None when the report has nothing for it."""
ANALYSES_DIR = "analyses"


def report_path(ref: str | os.PathLike[str], kind: str) -> Path:
    """Where the `kind` report of the model `ref` goes: `RUN/analyses/KIND.json` for a run
    or checkpoint of ours, `DIR/analyses/KIND.json` for a local Hugging Face directory,
    `runs/NAME/analyses/KIND.json` for a hub name."""
    return output_dir_of(ref) / ANALYSES_DIR / f"{kind}.json"


def refuse_existing(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """`out`, unless it exists and `overwrite` is false (checked before any work is done)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    return out


def check_output(out: str | os.PathLike[str], overwrite: bool,
                 inputs: dict[str, object] | None = None,
                 model: str | os.PathLike[str] | None = None) -> Path:
    """Where a report may be written, checked before any work: not over an input (`inputs`:
    flag -> path, `--corpus` defaulting to the run's; the model's directory may hold it),
    not over an existing file unless `overwrite`, and then only over a report of ours."""
    from workbench.outputs import check_replaceable_file, check_separate, check_writable

    inputs = dict(inputs or {})
    if model is not None and inputs.get("--corpus") is None and "--corpus" in inputs:
        inputs["--corpus"] = corpus_path_of(model, None)
    check_separate(out, inputs, containers={"--model": model})
    check_writable(out)
    out = refuse_existing(out, overwrite)
    check_replaceable_file(out, "report")
    return out


def write_report(report: Report, out: str | os.PathLike[str], figures: dict[str, FigureMaker],
                 overwrite: bool = False) -> list[Path]:
    """Write `report` to `out` (atomically) and each figure beside it, at `out` with its
    suffix (`.fig.json`); refuse an existing `out` unless `overwrite`. Returns the paths
    written."""
    out = refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    paths = [out]
    for suffix, make in figures.items():
        fig = make(report)
        if fig is None:
            continue
        path = out.with_suffix(suffix)
        write_figure(fig, path)
        paths.append(path)
    return paths


def write_figure(fig: go.Figure, path: str | os.PathLike[str]) -> None:
    """A plotly figure as JSON, written atomically (temporary file, then rename)."""
    write_text_atomic(Path(path), fig.to_json())


def corpus_path_of(ref: str | os.PathLike[str], corpus: str | os.PathLike[str] | None,
                   required: str | None = None) -> Path | None:
    """`corpus` when given, else the corpus the run `ref` was trained on (None when it names
    none). With `required` (what the corpus is for), a missing one is an error with the fix."""
    path = corpus if corpus is not None else corpus_of(ref)
    if path is None and required is not None:
        if not Path(ref).exists() and ("/" in str(ref) or str(ref).startswith(".")):
            raise FileNotFoundError(f"model reference {str(ref)!r} does not exist; pass a run "
                                    "directory (`workbench train`) or a local Hugging Face "
                                    "directory")
        raise ValueError(f"model {str(ref)!r} names no corpus; pass --corpus PATH ({required})")
    return None if path is None else Path(path)


def load_corpus_of(ref: str | os.PathLike[str], corpus: str | os.PathLike[str] | None,
                   required: str | None = None) -> Corpus | None:
    """The loaded corpus of `corpus_path_of` (None when there is none and none is required)."""
    from workbench.world import load_corpus

    path = corpus_path_of(ref, corpus, required)
    return None if path is None else load_corpus(path)
