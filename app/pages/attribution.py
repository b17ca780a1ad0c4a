"""Why does it believe this? The `workbench attribute` report of the picked model: for a fact,
the training documents a method ranks first (those that state the fact marked), how well each
method retrieves the documents that state it against what a random ranking scores, the
report's figures, when TracIn's stretches of training taught it, and the retraining check
when the report has one; without a report, a form that runs the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import compute, runs, ui
from attribution.figures import exposure_figure, retrieval_figure, tracin_figure
from attribution.methods import METHODS
from attribution.summary import summary

FIGURES = (("attr_retrieval", retrieval_figure), ("attr_exposure", exposure_figure),
           ("attr_tracin", tracin_figure))


def new_report(sel: ui.Selection, out: Path, corpus: Path | None, exists: bool) -> None:
    """The options of `workbench attribute` (at the command's defaults), its command line and
    the button that runs it."""
    if corpus is None:
        st.info("`workbench attribute` ranks a world corpus's training documents; put the "
                "model's corpus in the runs folder (`workbench world build`)")
        return
    cli = runs.analysis_defaults("attribute")  # the form starts at the command's defaults
    # TracIn sums over a run's checkpoints: not offered for a Hugging Face directory
    methods = [m for m in METHODS if m != "tracin" or sel.entry.kind == "run"]
    cols = st.columns([2, 1, 1])
    chosen = cols[0].multiselect("methods", methods, key="attr_new_methods",
                                 default=[m for m in cli["method"].split(",") if m in methods],
                                 help="bm25 and a random ranking are always added beside them")
    facts = cols[1].number_input("facts", 1, 1000, int(cli["facts"]), key="attr_new_facts",
                                 help="how many of the world's facts, spread over people")
    candidates = cols[2].number_input(
        "candidates", 0, 10_000_000, int(cli["candidates"]), step=1000,
        key="attr_new_candidates", help="training documents scored besides those that state "
        "a queried fact (a seeded sample); `--candidates all` on the command line scores "
        "every one")
    if not chosen:
        st.warning("Pick at least one method.")
        return
    args = runs.analysis_argv("attribute", sel.entry, corpus, overwrite=exists,
                              method=",".join(chosen), facts=str(int(facts)),
                              candidates=str(int(candidates)))
    if ui.run_panel(args, out, "Attribute the facts to training documents",
                    key="run_attribute"):
        st.rerun()


def query_caption(query: dict[str, Any], stating: int | None, scored: int) -> str:
    """What the fact is, how often training states it and what it is asked with."""
    prompts = "; ".join(f"“{p}”" for p in query["prompts"])
    said = "" if query["mentions"] < 0 else (
        f"; stated {query['mentions']:,} times in training text (exposure "
        f"**{query['bucket']}**)")
    among = ("" if stating is None
             else f"; {stating:,} of the {scored:,} documents scored state it")
    return f"answer **{query['answer']}**{said}{among}. Asked with {prompts}"


st.title("Why does it believe this?")
sel = ui.require_selection()
entry = sel.entry
out = entry.analysis("attribute")
corpus = runs.corpus_for(entry, sel.root)
report = ui.report(out, "attribute")
if report is None:
    st.subheader(f"No attribution report for {entry.name} yet")
    new_report(sel, out, corpus, exists=False)
    st.stop()

docs = report["documents"]
st.caption(f"`{out}` (the run's latest checkpoint; the sidebar's step does not apply here): "
           f"{docs['scored']:,} of {docs['train_documents']:,} training documents scored "
           f"(candidates: {docs['candidates']})")
st.code(summary(report), language="text", wrap_lines=True)

queries = {q["fact"]: q for q in report["queries"]}
cols = st.columns([2, 1])
fact = cols[0].selectbox("fact", list(queries), key="attr_fact",
                         format_func=lambda f: f"{f} → {queries[f]['answer']}")
method = cols[1].selectbox("method", list(report["methods"]), key="attr_method",
                           help="the report's methods; bm25 and random are the baselines")
query = queries[fact]
truth = report["methods"][method]["facts"].get(fact)
st.subheader(fact)
st.caption(query_caption(query, None if truth is None else truth["stating"], docs["scored"]))

top = compute.top_document_rows(report["methods"][method]["top"].get(fact, []))
hits = sum(r["states the fact"] == compute.STATES for r in top)
if truth is None:  # a free prompt: no document is known to state it, so none is marked
    top = [{k: v for k, v in r.items() if k != "states the fact"} for r in top]
st.markdown(f"**{method}'s top {len(top)} documents**" + (
    "" if truth is None else f": {hits} of {len(top)} state the fact"))
st.table(top, hide_index=True)

st.markdown("**Retrieval of the documents that state it**")
rows = compute.retrieval_rows(report, fact)
if rows:
    st.caption("precision among the first 10 and 100 documents, and average precision "
               "(AUPRC), for this fact and as the mean over the report's facts; the last row "
               "is what a random ranking scores in expectation (the share of candidates that "
               "state the fact)")
    st.dataframe(rows, hide_index=True, key="attr_retrieval_table")
else:
    st.info("a free prompt: nothing says which documents state it, so there is no retrieval "
            "to score")

shares = compute.tracin_rows(report, fact)
if shares:
    half = report["tracin"]["facts"][fact]["half_step"]
    st.markdown("**When it was taught (TracIn)**")
    st.caption("each checkpoint's stretch of training: its learning rates summed, and the "
               "contribution it made to this fact over the documents that state it; half of "
               "it was made " + ("by no step (no contribution)" if half is None
                                 else f"by step {half}"))
    st.dataframe(shares, hide_index=True, key="attr_tracin_table")

for key, make in FIGURES:
    fig = make(report)
    if fig is not None:
        st.plotly_chart(fig, key=key)

if "verify" in report:  # the retraining check (`workbench attribute verify`)
    st.subheader("Retraining check")
    st.caption(f"retrained without each method's top {report['verify']['k']} documents per "
               f"fact, as many random ones, or every mention (`{report['verify']['result']}`)")
    st.dataframe(compute.verify_rows(report["verify"]), hide_index=True, key="attr_verify")
    for line in compute.verify_verdicts(report["verify"]):
        st.markdown(line)

with st.expander("run a new attribution (replaces this report)"):
    new_report(sel, out, corpus, exists=True)
