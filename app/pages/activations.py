"""Activations: browse an HDF5 activation file (`workbench cache`): its hooks and shapes, its
rows with their labels, and a 2-D PCA of one hook coloured by a label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import compute, runs, ui
from app.figures import pca_figure


def _file(name: str) -> Path:
    return runs.inside(runs.runs_root(), name)


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
def rows(name: str, mtime: float, start: int, n: int, corpus: str | None) -> list[dict[str, Any]]:
    return compute.store_rows(_file(name), start, n, names_of(corpus))


@st.cache_data(show_spinner="projecting", max_entries=16)
def pca(name: str, mtime: float, hook: str, n: int, label: str | None, corpus: str | None
        ) -> tuple[Any, Any, list[str]]:
    return compute.store_pca(_file(name), hook, n, label, names_of(corpus))


st.title("Activations")
sel = ui.require_selection()
files = runs.list_activation_files(sel.root, first=sel.entry.path)
if not files:
    st.subheader("No activation file under the runs folder yet")
    corpus = runs.corpus_for(sel.entry, sel.root)
    if corpus is None:
        st.warning(f"Caching needs a corpus under {sel.root} (`workbench world build --out "
                   f"{sel.root}/world`).")
        st.stop()
    args = runs.cache_argv(sel.entry, corpus)
    if ui.run_panel(args, sel.entry.path / "acts_val.h5", "Cache the residual stream",
                    key="run_cache"):
        st.rerun()
    st.stop()

names = [f.relative_to(sel.root).as_posix() for f in files]
name = st.selectbox("activation file", names, key="acts_file")
mtime = _file(name).stat().st_mtime
try:
    attrs, hooks = overview(name, mtime)
except (ValueError, FileNotFoundError) as exc:
    st.error(str(exc))
    st.stop()
corpus = attrs.get("corpus")
left, right = st.columns([1, 2])
left.dataframe([{"attribute": k, "value": str(v)} for k, v in attrs.items()], hide_index=True,
               key="acts_attrs")
right.dataframe(hooks, hide_index=True, key="acts_hooks")

st.subheader("Rows")
n_rows = int(attrs["n_rows"])
start = st.number_input(f"first row (0-{max(0, n_rows - 1)})", 0, max(0, n_rows - 1), 0,
                        step=50, key="acts_start")
st.dataframe(rows(name, mtime, int(start), 50, corpus), hide_index=True, key="acts_rows")

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
