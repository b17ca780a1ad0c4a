"""The analysis protocol: what every analysis module declares, the registry that finds them,
and how reports are written.

An analysis is a module with:

- `KIND` (the report's file name: `analyses/KIND.json`), `SCHEMA` (`workbench.KIND/N`) and
  `FIGURES` (figure suffix -> maker);
- `Config`: its configuration dataclass (defaults work on the shipped model);
- `run(model, corpus, cfg=None, *, ref=None, checkpoints=None, progress=True) -> Report` on
  a loaded model (`checkpoints`: the loaded checkpoints of its run, for analyses over
  training history; the analysis never loads a model itself);
- `from_ref(ref, cfg=None, *, corpus=None, device="cpu", progress=True, ...) -> Report`:
  resolves the `ModelRef`, loads the model and its corpus once, then calls `run`;
- `summary(report) -> str`: the text the command prints.

Analyses register under the `workbench.analyses` entry points of `pyproject.toml`
(`probe = "probe.layers"`); `analyses()` reads them, and the command line
(`workbench.cli.analyses.analysis_command`), the dashboard and the tests take the list from
there. `write_report(report, ref.report_path(KIND), FIGURES)` writes a report and its figures.

>>> report_path("gpt2", "probe").as_posix()  # a hub name; a run writes under its folder
'runs/gpt2/analyses/probe.json'
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from workbench.models.checkpoints import write_json_atomic, write_text_atomic
from workbench.models.refs import ModelRef

if TYPE_CHECKING:
    import plotly.graph_objects as go

Report = dict[str, Any]
"""An analysis result: JSON-ready, with a `schema` key, its inputs and its numbers."""
FigureMaker = Callable[[Report], "go.Figure | None"]
"""Makes one figure of a report; None when the report has nothing for it."""
GROUP = "workbench.analyses"
PROTOCOL = ("KIND", "SCHEMA", "FIGURES", "Config", "run", "from_ref", "summary")
RUN_PARAMS = ("model", "corpus", "cfg")
RUN_KEYWORDS = ("ref", "progress")  # and `checkpoints`, for analyses over a run's history
FROM_REF_PARAMS = ("ref", "cfg")
FROM_REF_KEYWORDS = ("corpus", "device", "progress")


def protocol_problems(module: ModuleType) -> list[str]:
    """What `module` lacks of the analysis protocol (empty when it keeps it whole).

    >>> protocol_problems(inspect)[:1]
    ['inspect has no KIND']
    """
    name = module.__name__
    problems = [f"{name} has no {attr}" for attr in PROTOCOL if not hasattr(module, attr)]
    if problems:
        return problems
    if not (isinstance(module.KIND, str) and module.KIND.isidentifier()):
        problems.append(f"{name}.KIND {module.KIND!r} is not a name")
    if not (isinstance(module.SCHEMA, str)
            and module.SCHEMA.startswith(f"workbench.{module.KIND}/")):
        problems.append(f"{name}.SCHEMA {module.SCHEMA!r} is not 'workbench.KIND/N'")
    if not (isinstance(module.FIGURES, dict) and module.FIGURES
            and all(k.endswith(".fig.json") and callable(v) for k, v in module.FIGURES.items())):
        problems.append(f"{name}.FIGURES is not a dict of '.fig.json' suffixes to makers")
    if not dataclasses.is_dataclass(module.Config):
        problems.append(f"{name}.Config is not a dataclass")
    else:
        try:
            module.Config()
        except TypeError as exc:
            problems.append(f"{name}.Config() has no defaults for every field ({exc})")
    problems += _signature_problems(f"{name}.run", module.run, RUN_PARAMS, RUN_KEYWORDS)
    problems += _signature_problems(f"{name}.from_ref", module.from_ref, FROM_REF_PARAMS,
                                    FROM_REF_KEYWORDS)
    if list(inspect.signature(module.summary).parameters) != ["report"]:
        problems.append(f"{name}.summary does not take exactly (report)")
    return problems


def _signature_problems(name: str, func: Callable[..., Any], positional: tuple[str, ...],
                        keywords: tuple[str, ...]) -> list[str]:
    params = inspect.signature(func).parameters
    problems = []
    if tuple(params)[:len(positional)] != positional:
        problems.append(f"{name} does not start with ({', '.join(positional)})")
    elif params["cfg"].default is not None:
        problems.append(f"{name}'s cfg does not default to None (the Config's defaults)")
    for key in keywords:
        p = params.get(key)
        if p is None or p.kind is not inspect.Parameter.KEYWORD_ONLY:
            problems.append(f"{name} has no keyword-only {key!r}")
    return problems


def analyses() -> dict[str, ModuleType]:
    """Every registered analysis module by `KIND`, in registration order.

    Raises:
        ValueError: an entry does not keep the protocol, or two share a KIND.
    """
    found: dict[str, ModuleType] = {}
    for ep in entry_points(group=GROUP):
        module = ep.load()
        problems = protocol_problems(module) if isinstance(module, ModuleType) else [
            f"{ep.value!r} is not a module"]
        if problems:
            raise ValueError(f"analysis {ep.name} ({GROUP} entry point): " + "; ".join(problems))
        if module.KIND in found:
            raise ValueError(f"two analyses have KIND {module.KIND!r}; rename one")
        found[module.KIND] = module
    return found


def report_path(ref: str | os.PathLike[str] | ModelRef, kind: str) -> Path:
    """Where the `kind` report of the model `ref` goes (`ModelRef.report_path`):
    `RUN/analyses/KIND.json` for a run or checkpoint of ours, `DIR/analyses/KIND.json` for a
    local Hugging Face directory, `runs/NAME/analyses/KIND.json` for a hub name."""
    return ModelRef.of(ref).report_path(kind)


def refuse_existing(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """`out`, unless it exists and `overwrite` is false (checked before any work is done)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    return out


def check_output(out: str | os.PathLike[str], overwrite: bool,
                 inputs: dict[str, object] | None = None,
                 model: str | os.PathLike[str] | ModelRef | None = None) -> Path:
    """Where a report may be written, checked before any work: not over an input (`inputs`:
    flag -> path, `--corpus` defaulting to the run's; the model's directory may hold it),
    not over an existing file unless `overwrite`, and then only over a report of ours."""
    from workbench.outputs import check_replaceable_file, check_separate, check_writable

    inputs = dict(inputs or {})
    ref = None if model is None else ModelRef.of(model)
    if ref is not None and inputs.get("--corpus") is None and "--corpus" in inputs:
        inputs["--corpus"] = ref.corpus_path(None)
    check_separate(out, inputs, containers={"--model": None if ref is None else ref.text})
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
