"""Circuits: the `workbench circuit` report of the picked model: pick a task and a method,
see its graph (layers left to right, node size and edge width by score, edges outside the
exact-patching truth dotted) above a threshold, the faithfulness curves and the recovery
table; the command that writes a missing report, with a button."""

from __future__ import annotations

import streamlit as st

from app import runs, ui
from circuits.circuit_figures import dynamics_figure, faithfulness_figure, graph_figure
from circuits.circuit_summary import recovery_rows, summary

st.title("Circuits")
sel = ui.require_selection()
entry = sel.entry
out = entry.analysis("circuit")
corpus = runs.corpus_for(entry, sel.root)
report = ui.report(out, "circuit")
if report is None:
    st.subheader(f"No circuit report for {entry.name} yet")
    if ui.run_panel(runs.analysis_argv("circuit", entry, corpus), out,
                    "Run circuit discovery", key="run_circuit"):
        st.rerun()
    st.stop()

st.caption(f"`{out}` (the run's latest checkpoint; the sidebar's step does not apply here)")
cols = st.columns(3)
task = cols[0].selectbox("task", list(report["tasks"]), key="circ_task")
t = report["tasks"][task]
methods = [m for m, e in t["methods"].items() if e.get("edges") is not None]
if not methods:
    st.info("This report scored nodes only (`--method attribution`); no edges to draw.")
    st.stop()
method = cols[1].selectbox("method", methods, key="circ_method")
scores = [abs(s) for s in t["methods"][method]["edges"]]
circuit = set(t.get("circuit", {}).get("edges", []))
in_circuit = [abs(s) for e, s in zip(report["graph"]["edges"], t["methods"][method]["edges"])
              if e in circuit]
default = min(in_circuit) if in_circuit and method == t.get("circuit", {}).get("method") \
    else sorted(scores, reverse=True)[min(len(scores), 10) - 1]
threshold = cols[2].slider("edges with |score| at least (fraction of the total effect)", 0.0,
                           max(scores), float(default), format="%.4f", key="circ_threshold",
                           help="a score is the edge's effect on the task's metric when it is "
                                "patched from the corrupted run, over the task's whole effect")
st.caption(f"{t['description']}; {t['n_pairs']} pairs, metric {t['clean']:.3f} clean and "
           f"{t['corrupt']:.3f} corrupted")
fig = graph_figure(report, task, method, threshold)
if fig is not None:
    st.plotly_chart(fig, key="circ_graph")
faith = faithfulness_figure(report)
if faith is not None:
    st.plotly_chart(faith, key="circ_faith")
st.dataframe(recovery_rows(report), hide_index=True, key="circ_table")
with st.expander("summary"):
    st.code(summary(report), language="text", wrap_lines=True)
if report.get("dynamics"):
    st.plotly_chart(dynamics_figure(report), key="circ_dynamics")
