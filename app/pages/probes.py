"""Probes: the `workbench probe` sweep of the picked model (accuracy and selectivity against
layer per task, with 95 % intervals) and a form that runs a new sweep with a progress bar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import runs, ui
from app.figures import probe_task_figure
from probe.figures import sweep_figure
from probe.layers import table
from probe.tasks import SUITES


def new_sweep(sel: ui.Selection, out: Path, exists: bool) -> None:
    """The options of a sweep, its command, and the button that runs it."""
    corpora = runs.list_corpora(sel.root)
    if not corpora:
        st.warning(f"No corpus under {sel.root}: a sweep needs a world corpus in the model's "
                   f"tokenizer (`workbench world build --out {sel.root}/world`).")
        return
    default = runs.corpus_for(sel.entry, sel.root)
    names = [c.relative_to(sel.root).as_posix() for c in corpora]
    cli = runs.analysis_defaults("probe")  # the form starts at `workbench probe`'s defaults
    cols = st.columns(4)
    name = cols[0].selectbox("corpus", names, index=corpora.index(default)
                             if default in corpora else 0, key="probe_corpus")
    tasks = cols[1].multiselect("tasks", [*SUITES, *(t for ts in SUITES.values() for t in ts)],
                                default=cli["tasks"].split(","), key="probe_tasks")
    kinds = ["linear", "mlp"]
    kind = cols[2].radio("probe", kinds, index=kinds.index(cli["probe"]), horizontal=True,
                         key="probe_kind")
    max_tokens = cols[3].number_input("max tokens of the split", 1000, 10_000_000,
                                      cli["max_tokens"], step=1000, placeholder="all",
                                      key="probe_max_tokens",
                                      help="empty: the whole split (the command's default)")
    if not tasks:
        st.warning("Pick at least one task.")
        return
    args = runs.analysis_argv("probe", sel.entry, corpora[names.index(name)],
                              overwrite=exists, tasks=",".join(tasks), probe=kind,
                              max_tokens=None if max_tokens is None else int(max_tokens))
    if ui.run_panel(args, out, "Run the sweep", key="run_probe"):
        st.rerun()


st.title("Probes")
sel = ui.require_selection()
out = sel.entry.analysis("probe")
report = ui.report(out, "probe")
if report is None:
    st.subheader(f"No probe sweep for {sel.entry.name} yet")
    new_sweep(sel, out, exists=False)
    st.stop()

st.caption(f"`{out}`: {report['probe']} probes on {report['split']} of `{report['corpus']}` "
           f"({report.get('elapsed_s', '?')} s); the sidebar's step does not apply here")
st.code(report["summary"]["text"], language="text", wrap_lines=True)
st.plotly_chart(sweep_figure(report), key="probe_sweep")
task = st.selectbox("task", list(report["tasks"]), key="probe_task")
st.plotly_chart(probe_task_figure(report, task), key="probe_task_fig")
with st.expander("table"):
    st.code(table(report), language="text")
with st.expander("run a new sweep (replaces this report)"):
    new_sweep(sel, out, exists=True)
