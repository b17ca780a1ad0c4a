"""Induction: the `workbench induction` report of the picked model: head scores and ablation
effects per head, Q/K/V composition, and the phase change over the run's checkpoints."""

from __future__ import annotations

import streamlit as st

from app import runs, ui
from app.figures import composition_figure
from circuits.figures import dynamics_figure, heads_figure
from circuits.induction import findings

COLUMNS = ("name", "induction", "prefix_matching", "prev_token", "duplicate", "copying",
           "ablation_nats", "mean_ablation_nats", "is_induction", "is_prev_token")

st.title("Induction heads")
sel = ui.require_selection()
entry = sel.entry
out = entry.analysis("induction")
corpus = runs.corpus_for(entry, sel.root)
report = ui.report(out, "induction")
if report is None:
    st.subheader(f"No induction report for {entry.name} yet")
    if ui.run_panel(runs.analysis_argv("induction", entry, corpus), out,
                    "Run the induction analysis", key="run_induction"):
        st.rerun()
    st.stop()

st.caption(f"`{out}` (the run's latest checkpoint; the sidebar's step does not apply here)")
st.code(findings(report), language="text", wrap_lines=True)
st.plotly_chart(heads_figure(report), key="ind_heads")

rows = sorted(report["heads"], key=lambda r: -r["induction"])
st.dataframe([{k: r.get(k) for k in COLUMNS} for r in rows], hide_index=True,
             key="ind_table")

st.subheader("Composition")
modes = [m for m in ("K", "K_path", "K_path_all", "Q", "V") if m in report["composition"]]
mode = st.radio("composition", modes, horizontal=True, key="ind_mode",
                help="K, Q, V: how much each earlier head's output space feeds the later "
                     "head's keys, queries or values, from the weights (Elhage et al. 2021). "
                     "K_path: how much the later head's induction score drops when the "
                     "earlier head's output is replaced by its mean in the later head's key "
                     "input only (direct-path patching; computed for layers with induction "
                     "heads). K_path_all: the same with the keys taken from a run where the "
                     "earlier head is mean-ablated, so its output also counts through the "
                     "heads between")
st.plotly_chart(composition_figure(report, mode), key="ind_comp")
if report["pairs"]:
    st.dataframe(report["pairs"], hide_index=True, key="ind_pairs")

st.subheader("Phase change over checkpoints")
if entry.kind == "run" and len(entry.steps) == 1:
    st.info(f"No phase change to show: {ui.ONE_CHECKPOINT}.")
elif report.get("dynamics", {}).get("checkpoints"):
    st.plotly_chart(dynamics_figure(report), key="ind_dynamics")
elif entry.kind == "run":
    if ui.run_panel(runs.analysis_argv("induction", entry, corpus, overwrite=True), out,
                    "Score every checkpoint", key="run_dynamics",
                    why="This report has no checkpoint dynamics; this command rewrites it "
                        "with them:"):
        st.rerun()
else:
    st.info("A Hugging Face directory has no training checkpoints to follow.")
