"""What the dashboard reads, found under one runs folder: models (our runs and local Hugging
Face directories), their checkpoints, corpora, activation files and analysis reports, and the
`workbench` commands that make a missing analysis. No Streamlit here: every function is
importable and unit-tested; the pages only call them.

The dashboard reads nothing outside its runs folder: every path it opens goes through
`inside`, which resolves symlinks and `..` and refuses what escapes the folder.

>>> import tempfile; root = Path(tempfile.mkdtemp())
>>> inside(root, "demo/analyses") == root.resolve() / "demo/analyses"
True
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sweep import laws as scaling
from workbench.analysis import analyses
from workbench.cli.registry import build_parser, command_argv
from workbench.layout import CHECKPOINTS_DIR, EVAL_JSON, RUN_JSON, read_run_json, step_of
from workbench.models.checkpoints import is_checkpoint_dir, is_hf_dir, list_checkpoints
from workbench.models.refs import ModelRef

RUNS_ENV = "WORKBENCH_RUNS"  # how `workbench app --runs DIR` tells the app its folder
MAX_DEPTH = 3  # how deep under the runs folder models, corpora and files are looked for
SCHEMAS = {kind: m.SCHEMA for kind, m in analyses().items()}  # the registered analyses' reports
SCHEMAS["scaling"] = scaling.SCHEMA  # `workbench sweep analyze`'s sweep.json


PAGES = (  # (file under app/, title, icon) in menu order; a missing file is left out
    ("pages/models.py", "Models", ":material/model_training:"),
    ("pages/attention.py", "Attention", ":material/grid_on:"),
    ("pages/induction.py", "Induction", ":material/repeat:"),
    ("pages/circuits.py", "Circuits", ":material/account_tree:"),
    ("pages/probes.py", "Probes", ":material/troubleshoot:"),
    ("pages/beliefs.py", "Beliefs", ":material/psychology:"),
    ("pages/attribution.py", "Why does it believe this?", ":material/manage_search:"),
    ("pages/icl.py", "In-context learning", ":material/school:"),
    ("pages/features.py", "Features", ":material/join_inner:"),
    ("pages/activations.py", "Activations", ":material/scatter_plot:"),
    ("pages/logit_lens.py", "Logit lens", ":material/layers:"),
    ("pages/scaling.py", "Scaling", ":material/trending_down:"),
)


def available_pages(app_dir: Path) -> list[tuple[str, str, str]]:
    """The entries of `PAGES` whose file exists under `app_dir`."""
    return [p for p in PAGES if (Path(app_dir) / p[0]).is_file()]


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """`path` (relative to `root`, or absolute) resolved, if it lies inside `root`.

    Raises:
        ValueError: the path escapes the runs folder (`..`, an absolute path elsewhere, or
            a symlink pointing out).
    """
    base = Path(root).resolve()
    full = (base / Path(path)).resolve()
    if full != base and base not in full.parents:
        raise ValueError(f"{path} is outside the runs folder {base}; the dashboard reads only "
                         f"under it: copy the files into {base} or start it with "
                         "`workbench app --runs DIR` on a folder that holds them")
    return full


def contained(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether `path` and everything under it (links resolved) lie inside `root`: a
    checkpoint, model or report directory with a link leading out is left out."""
    try:
        inside(root, path)
        if Path(path).is_dir():
            for p in Path(path).rglob("*"):
                inside(root, p)
    except (ValueError, OSError):
        return False
    return True


def runs_root(value: str | None = None) -> Path:
    """The runs folder: `value`, else `$WORKBENCH_RUNS`, else `runs` (must exist)."""
    root = Path(value or os.environ.get(RUNS_ENV) or "runs").expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"runs folder {root} is a file, not a folder; pass the folder that "
                         "holds your runs (`workbench app --runs DIR`)")
    if not root.is_dir():
        raise FileNotFoundError(
            f"runs folder {root} does not exist; create one with `make demo` (runs/) or "
            "`workbench train --run DIR/NAME`, then `workbench app --runs DIR`")
    return root.resolve()


@dataclass(frozen=True)
class ModelEntry:
    """A model found under the runs folder.

    Attributes:
        name: its path relative to the runs folder (`demo`, `hf/tiny-gpt2`).
        path: the resolved directory.
        kind: `run` (ours: `checkpoints/`) or `hf` (a local Hugging Face directory).
        steps: checkpoint steps of a run, ascending (empty for `hf`).
    """

    name: str
    path: Path
    kind: str
    steps: tuple[int, ...] = ()

    def checkpoint(self, step: int | None = None) -> Path:
        """The checkpoint directory at `step` (default: the latest); the directory itself for
        a Hugging Face model."""
        if self.kind == "hf":
            return self.path
        if step is None:
            step = self.steps[-1]
        if step not in self.steps:
            raise ValueError(f"{self.name} has no checkpoint at step {step}; it has "
                             f"{list(self.steps)}")
        return next(p for p in list_checkpoints(self.path) if _step(p) == step)

    @property
    def ref(self) -> ModelRef:
        """The model reference of this entry (resolved once per entry)."""
        return ModelRef.of(self.path)

    def analysis(self, kind: str) -> Path:
        """Where `workbench <kind>` writes its report for this model (as `--out` defaults)."""
        return self.ref.report_path(kind)


def _step(path: Path) -> int:
    return step_of(path) or 0


def _walk(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Directories under `root` (not following symlinks out), breadth first, sorted, skipping
    hidden ones and the insides of models and corpora."""
    found, frontier = [], [root]
    for _ in range(depth):
        nxt = []
        for d in frontier:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir()
                                  and not p.name.startswith("."))
            except OSError:
                continue
            for c in children:
                if c.is_symlink():
                    try:
                        inside(root, c)
                    except ValueError:
                        continue
                found.append(c)
                if not ((c / CHECKPOINTS_DIR).is_dir() or (c / "corpus.json").is_file()
                        or is_hf_dir(c) or is_checkpoint_dir(c)):
                    nxt.append(c)
        frontier = nxt
    return found


def list_models(root: Path) -> list[ModelEntry]:
    """Our runs (with at least one checkpoint) and local Hugging Face directories under
    `root`, by name."""
    root = Path(root).resolve()
    models = []
    for d in _walk(root):
        name = d.relative_to(root).as_posix()
        if (d / CHECKPOINTS_DIR).is_dir():
            steps = tuple(_step(p) for p in list_checkpoints(d) if contained(root, p))
            if steps:
                models.append(ModelEntry(name, d.resolve(), "run", steps))
        elif is_hf_dir(d) and contained(root, d):
            models.append(ModelEntry(name, d.resolve(), "hf"))
    return sorted(models, key=lambda m: m.name)


def list_corpora(root: Path) -> list[Path]:
    """Corpus directories (`corpus.json`) under `root`."""
    root = Path(root).resolve()
    return [d.resolve() for d in _walk(root)
            if (d / "corpus.json").is_file() and contained(root, d)]


def list_activation_files(root: Path, first: Path | None = None) -> list[Path]:
    """Complete activation files (`*.h5`) under `root`, those under `first` first."""
    root = Path(root).resolve()
    files = []
    for d in [root, *_walk(root, MAX_DEPTH + 1)]:
        for f in sorted(d.glob("*.h5")):
            try:
                files.append(inside(root, f))
            except ValueError:
                continue
    if first is not None:
        files.sort(key=lambda f: Path(first) not in f.parents)
    return files


def corpus_for(entry: ModelEntry, root: Path) -> Path | None:
    """The corpus a run was trained on, if it lies under `root`; else a corpus under `root`
    with the same folder name (runs copied together with their corpus); else the first
    world corpus under `root`; None when there is none."""
    corpora = list_corpora(root)
    recorded = None
    if entry.kind == "run" and (entry.path / RUN_JSON).is_file():
        try:
            recorded = read_run_json(entry.path).get("corpus")
        except (OSError, ValueError):
            recorded = None  # a damaged run.json: the dashboard names no corpus for it
    if recorded:
        try:
            path = inside(root, recorded)
            if (path / "corpus.json").is_file():
                return path
        except ValueError:
            pass
        same = [c for c in corpora if c.name == Path(recorded).name]
        if same:
            return same[0]
    worlds = [c for c in corpora if _corpus_kind(c) == "world"]
    return (worlds or corpora or [None])[0]


def _corpus_kind(path: Path) -> str | None:
    try:
        return json.loads((path / "corpus.json").read_text()).get("kind")
    except (OSError, json.JSONDecodeError):
        return None


def read_report(path: Path, kind: str, root: Path | None = None) -> dict[str, Any] | None:
    """The `kind` report at `path`, None when it does not exist (a kind not in `SCHEMAS`
    needs any `workbench.*` schema); with `root`, only a report inside it is read.

    Raises:
        ValueError: the file is not valid JSON, has another schema, or (with `root`) leads
            out of the runs folder.
    """
    path = Path(path)
    if root is not None and (path.exists() or path.is_symlink()):
        path = inside(root, path)
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); run the analysis again with "
                         "--overwrite") from exc
    if not isinstance(report, dict):
        raise ValueError(f"{path} holds a {type(report).__name__}, not a report; run the "
                         "analysis again with --overwrite")
    schema = str(report.get("schema"))
    expected = SCHEMAS.get(kind)
    if schema != expected and not (expected is None and schema.startswith("workbench.")):
        raise ValueError(f"{path} has schema {schema!r}, expected "
                         f"{expected or 'workbench.*'!r}; run the analysis again with "
                         "--overwrite")
    return report


def list_sweeps(root: Path) -> list[Path]:
    """Analyzed sweeps (`sweep.json` from `workbench sweep analyze`) under `root`."""
    root = Path(root).resolve()
    return [inside(root, d / scaling.REPORT_FILE) for d in [root, *_walk(root)]
            if (d / scaling.REPORT_FILE).is_file() and contained(root, d / scaling.REPORT_FILE)]


def member_model(root: Path, sweep_dir: Path, member: dict[str, Any]) -> str | None:
    """The runs-folder name of a sweep member's run (what the sidebar's model picker lists),
    None when it is not a model under `root`."""
    try:
        run = inside(root, Path(sweep_dir) / member.get("run", ""))
    except ValueError:
        return None
    names = {m.path: m.name for m in list_models(root)}
    return names.get(run)


def list_analyses(entry: ModelEntry) -> list[str]:
    """The analysis reports a model has (`induction`, `probe`, ...)."""
    folder = entry.path / "analyses"
    if not folder.is_dir() or not contained(entry.path, folder):
        return []
    return sorted(p.stem for p in folder.glob("*.json")
                  if not p.name.endswith(".fig.json") and contained(entry.path, p))


def list_dictionaries(entry: ModelEntry) -> list[Path]:
    """The sparse dictionaries of a model (`MODEL/sae/NAME/`, made by `workbench sae train`:
    `features.io.model_dictionaries`) that lie inside its folder."""
    from features.io import model_dictionaries

    if not contained(entry.path, entry.path / "sae"):
        return []
    return [d for d in model_dictionaries(entry.path) if contained(entry.path, d)]


# ---- commands that make a missing analysis ------------------------------------------------


def _rel(path: Path) -> str:
    """`path` relative to the working directory when it lies under it, else absolute."""
    cwd = Path.cwd().resolve()
    path = Path(path).resolve()
    return path.relative_to(cwd).as_posix() if cwd in path.parents else str(path)


@lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def argv(command: str, **options: Any) -> list[str]:
    """`workbench COMMAND` arguments setting `options` (by destination), from the command's
    own registered description (`workbench.cli.registry.command_argv`)."""
    return command_argv(command, options, parser=_parser())


def analysis_argv(kind: str, entry: ModelEntry, corpus: Path | None, overwrite: bool = False,
                  **options: Any) -> list[str]:
    """`workbench KIND` arguments writing `entry.analysis(kind)`: the model, its corpus, the
    options the analysis declares for the dashboard (`AnalysisFlags.dashboard`), then
    `options` (a page's form) over them; an option at the command's default is left out, so
    a form left at its defaults (`analysis_defaults`) runs the command's defaults.

    Raises:
        ValueError: `kind` is no registered analysis, or it needs a corpus and there is none.
    """
    flags = _flags(kind)
    declared = flags.dashboard(entry.kind, corpus is not None)
    if declared is None:
        raise ValueError(f"`workbench {kind}` needs a corpus; put one in the runs folder "
                         "(`workbench world build`)")
    defaults = analysis_defaults(kind)
    chosen = {k: v for k, v in {**declared, **options}.items()
              if k not in defaults or v != defaults[k]}
    opts: dict[str, Any] = {"model": _rel(entry.path),
                            "corpus": None if corpus is None else _rel(corpus)}
    opts.update(chosen)
    return argv(kind, **opts, out=_rel(entry.analysis(kind)), overwrite=overwrite)


def analysis_defaults(kind: str) -> dict[str, Any]:
    """The defaults of `workbench KIND`'s own flags, by destination (`max_tokens`, not
    `--max-tokens`): what a page's form starts from, so that its defaults are the command's.

    >>> analysis_defaults("probe")["tasks"], analysis_defaults("probe")["max_tokens"]
    ('syntax,semantics,facts', None)
    """
    parser = argparse.ArgumentParser(add_help=False)
    _flags(kind).add_arguments(parser)
    return vars(parser.parse_args([]))


def _flags(kind: str) -> Any:
    """The `AnalysisFlags` of the registered analysis `kind`."""
    flags = getattr(getattr(_commands().get(kind), "run", None), "flags", None)
    if flags is None:
        raise ValueError(f"`workbench {kind}` is not a registered analysis; the analyses: "
                         f"{sorted(analyses())}")
    return flags


@lru_cache(maxsize=1)
def _commands() -> dict[str, Any]:
    from workbench.cli.registry import commands

    return {c.name: c for c in commands()}


def cache_argv(entry: ModelEntry, corpus: Path, split: str = "val",
               max_tokens: int | None = None) -> list[str]:
    """`workbench cache` arguments writing every layer's residual stream of `split` to
    `entry.path / acts_SPLIT.h5`: by default the whole split, the file `make demo` makes."""
    return argv("cache", model=_rel(entry.path), corpus=_rel(corpus), split=split,
                hooks="blocks.*.hook_resid_post", max_tokens=max_tokens, chunk=True,
                out=_rel(entry.path / f"acts_{split}.h5"))


def eval_argv(entry: ModelEntry, corpus: Path | None) -> list[str]:
    """`workbench eval` arguments writing the run's `eval.json`."""
    return argv("eval", model=_rel(entry.path),
                corpus=None if corpus is None else _rel(corpus),
                out=_rel(entry.path / EVAL_JSON))


def display_command(args: list[str]) -> str:
    """The shell line a user types: `workbench induction --model runs/demo ...`."""
    return shlex.join(["workbench", *args])


@dataclass(frozen=True)
class CommandResult:
    """What a finished command printed (progress bars left out) and its exit status."""

    returncode: int
    output: str

    @property
    def error(self) -> str:
        """The `workbench: error: ...` line, or the last line, of a failed command."""
        lines = [x for x in self.output.splitlines() if x.strip()]
        errors = [x for x in lines if "error:" in x]
        return (errors or lines or [f"exit status {self.returncode}"])[-1]


# `desc:  40%|####      | 4/10 [...]`: a tqdm bar as printed to a pipe
_BAR = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d{1,3})%\|")


def parse_progress(line: str) -> tuple[str, float] | None:
    """`(description, fraction)` of a tqdm progress line, None for other lines.

    >>> parse_progress("probe tasks:  40%|####      | 4/10 [00:01<00:02]")
    ('probe tasks', 0.4)
    """
    m = _BAR.match(line.strip())
    if m is None:
        return None
    return m["desc"].strip(), min(int(m["pct"]), 100) / 100


def run_command(args: list[str], on_progress: Callable[[str, float], None] | None = None,
                cwd: Path | None = None, python: str = sys.executable) -> CommandResult:
    """Run `workbench ARGS` in a child process (the same Python), reporting its progress
    bars through `on_progress(description, fraction)` as they advance."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([python, "-m", "workbench.cli.core", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    kept: list[str] = []
    buf = b""
    try:
        while chunk := proc.stdout.read1(4096):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                bar = parse_progress(line)
                if bar is not None:
                    if on_progress is not None:
                        on_progress(*bar)
                elif line.strip():
                    kept.append(line)
    except BaseException:  # the page was left (Streamlit stops its script): stop the child
        proc.kill()
        proc.wait()
        raise
    if buf.strip():
        kept.append(buf.decode(errors="replace").rstrip())
    return CommandResult(proc.wait(), "\n".join(kept))
