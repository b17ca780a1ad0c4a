"""Activations: browse an activation file (`workbench cache`) of the sidebar's model: its hooks
and shapes, its rows (tokens as text, with their labels), and a 2-D PCA of one hook coloured
by a label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import compute, runs, ui
from app.figures import pca_figure


def _file(name: str) -> Path:
    return runs.inside(runs.runs_root(), name)


@st.cache_data(show_spinner=False, max_entries=256)
def recorded_model(name: str, mtime: float) -> str:
    try:
        return compute.recorded_model(_file(name))
    except OSError:  # not an HDF5 file, or one being written: it names no model
        return ""


@st.cache_data(show_spinner=False, max_entries=16)
def overview(name: str, mtime: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return compute.store_overview(_file(name))


@st.cache_data(show_spinner=False, max_entries=16)
def names_of(corpus: str | None) -> dict[str, list[str]]:
    """Label names from the file's corpus when it lies under the runs folder."""
    if not corpus:
        return {}
    try:
        path = runs.inside(runs.runs_root(), corpus)
    except ValueError:
        return {}
    return compute.label_names(path) if (path / "corpus.json").is_file() else {}


@st.cache_data(show_spinner=False, max_entries=32)
def rows(name: str, mtime: float, start: int, n: int, corpus: str | None, ref: str
         ) -> list[dict[str, Any]]:
    """The rows, tokens decoded with the tokenizer of the model at `ref` (ids only when it
    cannot be loaded)."""
    try:
        tokenizer = ui.loaded_model(ref).model.tokenizer
    except (OSError, ValueError):
        tokenizer = None
    decode = None if tokenizer is None else lambda i: tokenizer.decode([i])
    return compute.store_rows(_file(name), start, n, names_of(corpus), decode)


@st.cache_data(show_spinner="projecting", max_entries=16)
def pca(name: str, mtime: float, hook: str, n: int, label: str | None, corpus: str | None
        ) -> tuple[Any, Any, list[str]]:
    return compute.store_pca(_file(name), hook, n, label, names_of(corpus))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


st.title("Activations")
sel = ui.require_selection()
every = runs.list_activation_files(sel.root)
rel = {f: f.relative_to(sel.root).as_posix() for f in every}
refs = {f: recorded_model(rel[f], _mtime(f)) for f in every}
files = compute.files_of_model(every, sel.entry.path, refs)
others = [rel[f] for f in every if f not in files]
if not files:
    st.subheader(f"No activation file for {sel.entry.name} yet")
    if others:
        st.caption(f"Other models' files are under the runs folder ({', '.join(others)}); "
                   "pick their model in the sidebar to browse them.")
    corpus = runs.corpus_for(sel.entry, sel.root)
    if corpus is None:
        st.warning(f"Caching needs a corpus under {sel.root} (`workbench world build --out "
                   f"{sel.root}/world`).")
        st.stop()
    args = runs.cache_argv(sel.entry, corpus)
    if ui.run_panel(args, sel.entry.path / "acts_val.h5", "Cache the residual stream",
                    key="run_cache", why=f"This command caches the residual stream of "
                    f"{sel.entry.name} (every layer, the val split):"):
        st.rerun()
    st.stop()

names = [rel[f] for f in files]
name = st.selectbox(f"activation file of {sel.entry.name}", names, key="acts_file")
mtime = _mtime(_file(name))
try:
    attrs, hooks = overview(name, mtime)
except (ValueError, FileNotFoundError) as exc:
    st.error(str(exc))
    st.stop()
corpus = attrs.get("corpus")
left, right = st.columns([1, 1])
left.table([{"attribute": k, "value": str(v)} for k, v in attrs.items()], hide_index=True)
right.dataframe(hooks, hide_index=True, key="acts_hooks")

st.subheader("Rows")
n_rows = int(attrs["n_rows"])
start = st.number_input(f"first row (0-{max(0, n_rows - 1)})", 0, max(0, n_rows - 1), 0,
                        step=50, key="acts_start")
st.dataframe(rows(name, mtime, int(start), 50, corpus, sel.ref), hide_index=True,
             key="acts_rows")

st.subheader("PCA")
flat = [h["hook"] for h in hooks]
labels = [x.strip() for x in str(attrs["labels"]).split(",") if x.strip() != "none"]
cols = st.columns(3)
hook = cols[0].selectbox("hook", flat, index=len(flat) - 1, key="acts_hook")
label = cols[1].selectbox("colour by", ["(none)", *labels],
                          index=1 + labels.index("pos") if "pos" in labels else 0,
                          key="acts_label")
n = cols[2].select_slider("rows", [500, 1000, 2000, 5000], value=2000, key="acts_n")
label_key = None if label == "(none)" else label
try:
    coords, explained, row_labels = pca(name, mtime, hook, int(n), label_key, corpus)
except ValueError as exc:
    st.warning(str(exc))
    st.stop()
st.plotly_chart(pca_figure(coords, row_labels, explained,
                           f"{hook}: {len(row_labels)} rows" + (f" by {label}" if label_key
                                                                 else "")), key="acts_pca")
