"""Streamlit pieces the pages share: the runs folder, the model picked in the sidebar, the
cached model (loaded once per checkpoint with `st.cache_resource` and never mutated: pages
only run it), cached reports and the panel that runs a missing analysis."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from app import runs

if TYPE_CHECKING:
    from workbench.models import Model

SELECTION = "workbench_selection"  # st.session_state key the router fills


@dataclass(frozen=True)
class Selection:
    """The model picked in the sidebar: a runs-folder entry and one of its checkpoints."""

    root: Path
    entry: runs.ModelEntry
    step: int | None

    @property
    def ref(self) -> str:
        """What `workbench.models.loader.load` takes: the checkpoint (or Hugging Face) directory."""
        return str(self.entry.checkpoint(self.step))

    @property
    def label(self) -> str:
        return self.entry.name + ("" if self.step is None else f" @ step {self.step}")


ONE_CHECKPOINT = ("the run has one checkpoint, so there is nothing over training to show (a "
                  "run of `workbench train` keeps log-spaced checkpoints, and the shipped model "
                  "its training history; this one was exported or copied without them)")
"""Why a view over training is empty for a run with a single checkpoint."""


@dataclass
class LoadedModel:
    """A shared model and the lock that keeps two sessions from hooking it at once."""

    model: Model
    lock: threading.Lock


@st.cache_resource(show_spinner="loading the model", max_entries=4)
def loaded_model(ref: str) -> LoadedModel:
    """The model at `ref`, loaded once for all sessions (pages must not change it)."""
    from workbench.models.refs import ModelRef

    return LoadedModel(ModelRef.of(ref).load(), threading.Lock())


def root() -> Path:
    """The runs folder (stops the page with the fix when it does not exist)."""
    try:
        return runs.runs_root()
    except FileNotFoundError as exc:
        st.error(str(exc))
        st.stop()
        raise  # unreachable: st.stop raises


def selection() -> Selection | None:
    return st.session_state.get(SELECTION)


def require_selection() -> Selection:
    """The sidebar's model, or a message and a stop when the runs folder has none."""
    sel = selection()
    if sel is None:
        folder = runs.runs_root()
        st.info(f"No model under {folder}. Train one, or put a Hugging Face directory "
                "(config.json + weights + tokenizer) there:")
        st.code(f"workbench world build --out {folder}/world\n"
                f"workbench train --preset default --corpus {folder}/world --run {folder}/demo",
                language="bash", wrap_lines=True)
        st.stop()
    return sel


def require_model() -> tuple[Selection, LoadedModel]:
    sel = require_selection()
    try:
        return sel, loaded_model(sel.ref)
    except (OSError, ValueError) as exc:
        st.error(f"cannot load {sel.ref}: {exc}")
        st.stop()
        raise


@st.cache_data(show_spinner=False, max_entries=32)
def _read_report(path: str, kind: str, mtime: float) -> dict[str, Any] | None:
    return runs.read_report(Path(path), kind, root=runs.runs_root())


def report(path: Path, kind: str) -> dict[str, Any] | None:
    """The report at `path` (re-read when the file changes); an error shown for a bad one."""
    mtime = path.stat().st_mtime if path.is_file() else 0.0
    try:
        return _read_report(str(path), kind, mtime)
    except ValueError as exc:
        st.error(str(exc))
        return None


def run_panel(args: list[str], out: Path, label: str, key: str,
              why: str | None = None) -> bool:
    """The command that writes `out` and a button that runs it with a progress bar; True
    when it just finished writing `out` (the caller reruns to show it)."""
    if why:
        st.info(why)
    st.code(runs.display_command(args), language="bash", wrap_lines=True)
    if not st.button(label, key=key):
        return False
    bar = st.progress(0.0, text="starting")

    def progress(desc: str, fraction: float) -> None:
        bar.progress(fraction, text=f"{desc or 'working'}: {fraction:.0%}")

    with st.spinner(f"running `{runs.display_command(args[:1])}`"):
        result = runs.run_command(args, progress)
    if result.returncode != 0 or not out.exists():
        bar.empty()
        st.error(f"the command failed: {result.error}")
        with st.expander("output"):
            st.code(result.output or "(nothing)", language="text", wrap_lines=True)
        return False
    bar.progress(1.0, text="done")
    st.success(f"written: {out}")
    return True
