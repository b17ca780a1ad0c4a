"""Models: the picked run and checkpoint, its model card, training and validation curves and
evaluation, and the analyses it has."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from app import runs, ui
from workbench.layout import EVAL_JSON, METRICS
from workbench.models.info import model_card
from workbench.plots import eval_figure, training_figure


@st.cache_data(show_spinner="reading the checkpoint", max_entries=16)
def card(ref: str, kind: str) -> str:
    """The model card (a Hugging Face model's from the shared, cached model)."""
    return model_card(ref, ui.loaded_model(ref).model if kind == "hf" else None)


st.title("Models")
sel = ui.require_selection()
entry = sel.entry
st.caption(f"{entry.kind}: `{entry.path}`")
left, right = st.columns([2, 3])
with left:
    st.subheader(sel.label)
    st.code(card(sel.ref, entry.kind), language="text", wrap_lines=True)
    analyses = runs.list_analyses(entry)
    st.markdown("**analyses**: " + (", ".join(analyses) if analyses else "none yet"))
with right:
    metrics = entry.path / METRICS
    if entry.kind == "run" and metrics.is_file():
        fig = training_figure(metrics)
        if st.toggle("log step axis", key="models_log", help="a run's checkpoints are "
                     "log-spaced early in training (0, 1, 2, 4, ...), then evenly spaced"):
            fig.update_xaxes(type="log")
        if sel.step is not None:
            fig.add_vline(x=sel.step, line={"color": "#d62728", "dash": "dot"},
                          name=f"step {sel.step}", annotation_text=f"step {sel.step}")
        st.plotly_chart(fig, key="training")
        if len(entry.steps) == 1:
            st.caption(f"The curves are the whole training run; {ui.ONE_CHECKPOINT}.")
    else:
        st.info("No training curves: this model was not trained here (a Hugging Face "
                "directory) or its run has no metrics.jsonl.")
evaluation = entry.path / EVAL_JSON
if evaluation.is_file():
    # titled with the run's own folder name in the runs folder (not a resolved link, nor
    # the path eval.json recorded on the machine that ran it)
    st.plotly_chart(eval_figure(json.loads(evaluation.read_text()), name=Path(entry.name).name),
                    key="eval")
elif entry.kind == "run":
    st.subheader("No evaluation yet")
    if ui.run_panel(runs.eval_argv(entry, runs.corpus_for(entry, sel.root)), evaluation,
                    "Evaluate the run", key="run_eval"):
        st.rerun()
