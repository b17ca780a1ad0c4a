"""The Interpretability Workbench dashboard: a router over thin pages.

    workbench app --runs runs          # or: WORKBENCH_RUNS=runs streamlit run app/streamlit_app.py

The sidebar picks a model under the runs folder (a run and one of its checkpoints, or a local
Hugging Face directory); every page reads it from `st.session_state`. A page is listed when
its file exists (`app.runs.PAGES`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import runs, ui

HERE = Path(__file__).parent


def pages() -> list[st.Page]:
    """The pages whose files exist, in menu order."""
    return [st.Page(path, title=title, icon=icon, default=i == 0)
            for i, (path, title, icon) in enumerate(runs.available_pages(HERE))]


def sidebar() -> None:
    """Pick the model every page looks at; store it in the session."""
    root = ui.root()
    models = runs.list_models(root)
    st.sidebar.caption(f"runs folder: `{root}`")
    if not models:
        st.session_state[ui.SELECTION] = None
        return
    names = [m.name for m in models]
    name = st.sidebar.selectbox("model", names, key="model_name",
                                help="our runs (checkpoints/) and local Hugging Face "
                                     "directories under the runs folder")
    entry = models[names.index(name)]
    step = None
    if entry.kind == "run" and len(entry.steps) > 1:
        step = st.sidebar.select_slider("checkpoint step", options=list(entry.steps),
                                        value=entry.steps[-1], key=f"step::{entry.name}")
    elif entry.kind == "run":  # a slider over one value does nothing: say why
        step = entry.steps[-1]
        st.sidebar.caption(f"checkpoint step {step}: {ui.ONE_CHECKPOINT}")
    st.session_state[ui.SELECTION] = ui.Selection(root, entry, step)


st.set_page_config(page_title="Interpretability Workbench", page_icon=":material/visibility:",
                   layout="wide")
nav = st.navigation(pages())
sidebar()
nav.run()
