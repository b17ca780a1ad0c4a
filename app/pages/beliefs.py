"""Beliefs: pick a fact; what the model states and how strongly; the in-context pressure
ladder; a live ROME, MEMIT, fine-tuning, steering or latent-clamp edit (through one of the
model's sparse dictionaries) on a copy of the model (before/after on the edit prompt,
paraphrases, neighbours and the subject's other facts); the causal trace; the
`workbench beliefs` report (the method table with kept and portability, MEMIT's batch and
sequential regimes, run from here); and,
for facts the `workbench attribute` report asked about, the training documents that taught
them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app import compute, runs, ui
from beliefs.elicit import elicit, object_ids
from beliefs.factbase import FactBase
from beliefs.figures import (
    ladder_figure,
    metrics_figure,
    regimes_figure,
    strength_figure,
    trace_figures,
)
from beliefs.ladder import LEVELS, ladder
from beliefs.latent import SubjectCodes, latent_edit
from beliefs.metrics import before_after
from beliefs.steering import steer_edit
from beliefs.suite import default_facts, edit_belief, latent_codes
from beliefs.summary import EASYEDIT_NAMES, TABLE, method_table
from circuits.tracing import TraceConfig, TraceResult, causal_trace, trace_figure
from workbench.prompts import candidate_logprobs


@st.cache_resource(show_spinner="reading the facts", max_entries=8)
def fact_base(corpus: str | None) -> FactBase:
    """The world's facts of a corpus, or the real-fact list for models without one."""
    from workbench.world import load_corpus

    return default_facts(None if corpus is None else load_corpus(Path(corpus)))


@st.cache_data(show_spinner="asking the model", max_entries=64)
def ask(ref: str, corpus: str | None, subject: str, relation: str, new: str
        ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], dict[str, Any] | None]:
    """What the model states (elicitation: over every prompt and paraphrase), each prompt's
    answer and p(object), the ladder towards `new`, and the causal trace of the edit prompt
    (None when the object is several tokens)."""
    lm, base = ui.loaded_model(ref), fact_base(corpus)
    belief = base.belief(subject, relation)
    with lm.lock:
        e = elicit(lm.model, belief).to_dict()
        logp = candidate_logprobs(lm.model, list(belief.prompts + belief.paraphrases),
                                  belief.candidates)
        row = ladder(lm.model, base, belief, new)
        trace = None
        if len(object_ids(lm.model, belief.object)) == 1:
            trace = causal_trace(lm.model, belief.prompts[0], subject, belief.object,
                                 TraceConfig(n_samples=5)).to_dict()
    idx = belief.candidates.index(belief.object)
    kinds = ["edit prompt"] + ["prompt"] * (len(belief.prompts) - 1) + \
        ["paraphrase"] * len(belief.paraphrases)
    per_prompt = [{"kind": kind, "prompt": q, "states": belief.candidates[int(lp.argmax())],
                   "p(object)": round(float(lp[idx].exp()), 3)}
                  for kind, q, lp in zip(kinds, belief.prompts + belief.paraphrases, logp,
                                         strict=True)]
    return e, per_prompt, row, trace


@st.cache_resource(show_spinner="estimating the key covariance (ROME)", max_entries=8)
def covariance(ref: str, corpus: str, layer: int, n_tokens: int) -> Any:
    from beliefs.editing import key_covariance
    from workbench.world import load_corpus

    lm = ui.loaded_model(ref)
    with lm.lock:
        return key_covariance(lm.model, load_corpus(Path(corpus)), layer, n_tokens=n_tokens,
                              split="val")


@st.cache_resource(show_spinner="reading the dictionary", max_entries=4)
def dictionary_codes(ref: str, corpus: str | None, sae: str) -> SubjectCodes:
    """The latent codes of the model's dictionary `sae` (checked against the model)."""
    from features.io import load_dictionary

    lm = ui.loaded_model(ref)
    d, meta = load_dictionary(sae)
    with lm.lock:
        return latent_codes(lm.model, fact_base(corpus), (d, meta | {"path": sae}))


LATENTS = 8  # latents clamped per object in the live edit (the shipped model's calibration)


def edit_rows(ref: str, corpus: str | None, subject: str, relation: str, new: str,
              method: str, layer: int, alpha: float = 1.0, sae: str | None = None,
              top: int | None = None) -> tuple[list[dict[str, str]], float]:
    """Edit a copy of the model (steering and latent clamps: hooks on a copy; MEMIT over
    layers `layer..top`, ROME and MEMIT with the retention term on the subject's other
    relations); the stated answer before/after on every prompt of the fact, on five
    neighbours and on the subject's other facts. The cached model is never changed."""
    from beliefs.suite import retention_prompts

    lm, base = ui.loaded_model(ref), fact_base(corpus)
    belief = base.belief(subject, relation)
    layers = list(range(layer, (top if top is not None else layer) + 1))
    covs = ({la: covariance(ref, corpus, la, 20_000) for la in layers}
            if method in ("rome", "memit") and corpus else {})
    codes = dictionary_codes(ref, corpus, sae) if method == "sae" and sae else None
    with lm.lock:
        if codes is not None:
            edit: Any = latent_edit(codes, belief, new, LATENTS, alpha, "after")
        elif method == "steer":
            edit = steer_edit(lm.model, base, belief, new, layer, alpha)
        else:
            edit = edit_belief(lm.model, belief, new, method, layer, covs.get(layer),
                               keep=retention_prompts(base, belief), covs=covs,
                               memit_layers=layers)
        rows = before_after(lm.model, base, belief, edit, n_neighbours=5)
    return rows, edit.norm()


def taught_by(attribution: dict[str, Any], fact: str) -> None:
    """The top 3 training documents of `fact` (`subject:relation`) by the attribute report's
    first method, in an expander; nothing when the report did not ask about the fact."""
    method, m = next(iter(attribution["methods"].items()))
    top = m["top"].get(fact)
    if not top:
        return
    truth = m["facts"].get(fact)
    with st.expander(f"training documents that taught {fact}: {method}'s top 3"):
        st.caption(("" if truth is None else f"{truth['stating']:,} of the "
                    f"{attribution['documents']['scored']:,} documents scored state it. ")
                   + "Every method, the retrieval scores and TracIn: the *Why does it believe "
                   "this?* page")
        st.table(compute.top_document_rows(top, 3), hide_index=True)


st.title("Beliefs")
sel, lm = ui.require_model()
model = lm.model
corpus_path = runs.corpus_for(sel.entry, sel.root) if sel.entry.kind == "run" else None
corpus = None if corpus_path is None else str(corpus_path)
base = fact_base(corpus)
st.caption(f"facts: {'world corpus ' + corpus_path.name if corpus_path else base.source}")

cols = st.columns([1, 2, 1])
relation = cols[0].selectbox("relation", base.direct_relations(), key="belief_relation")
subjects = [s for (s, r) in base.facts if r == relation]
subject = cols[1].selectbox("subject", subjects, key="belief_subject")
belief = base.belief(subject, relation)
others = [c for c in belief.candidates if c != belief.object]
new = cols[2].selectbox("new object", others, index=others.index(base.new_object(belief)),
                        key="belief_new")
e, per_prompt, row, trace = ask(sel.ref, corpus, subject, relation, new)

st.subheader(f"{subject} · {relation} · {belief.object}")
m = st.columns(4)
m[0].metric("states", e["stated"], delta="true" if e["stated"] == belief.object else "false",
            delta_color="normal" if e["stated"] == belief.object else "inverse")
m[1].metric(f"p(object), mean of {len(per_prompt)} prompts", f"{e['p_object']:.3f}",
            help="the mean over the fact's training-template prompts and held-out "
                 "paraphrases (each below, under 'each prompt'); the causal trace reads the "
                 "edit prompt alone")
m[2].metric("strength (margin, nats)", f"{e['strength']:.2f}")
m[3].metric("consistency", f"{e['consistency']:.0%}")
planted = base.exposure_of(subject, relation)
if planted:
    st.caption(f"planted in the world: exposure bucket **{planted['bucket']}** (weight "
               f"{planted['exposure']:.2f}"
               + (f", stated {planted['mentions']} times in training text" if "mentions" in
                  planted else "") + ")")
st.caption(f"on the edit prompt “{belief.prompts[0]}” alone: p(object) "
           f"{per_prompt[0]['p(object)']:.3f} (the causal trace's clean run); free generation "
           f"after it: “{e['generation']}”")
with st.expander(f"each prompt ({len(per_prompt)}: what the metrics above average)"):
    st.table(per_prompt, hide_index=True)
attribution = ui.report(sel.entry.analysis("attribute"), "attribute")
if attribution is not None:
    taught_by(attribution, f"{subject}:{relation}")
elif corpus_path is not None:
    st.caption("`workbench attribute` links facts to the training documents that taught them "
               "(the *Why does it believe this?* page runs it)")

tab_ladder, tab_edit, tab_trace, tab_report = st.tabs(
    ["pressure ladder", "edit a copy (ROME / MEMIT / fine-tuning / steering)", "causal trace",
     "report"])

with tab_ladder:
    levels = row["levels"]
    fig = go.Figure([go.Scatter(x=list(LEVELS), y=[levels[lv]["p_new"] for lv in LEVELS],
                                name=f"p({new})", mode="lines+markers"),
                     go.Scatter(x=list(LEVELS), y=[levels[lv]["p_old"] for lv in LEVELS],
                                name=f"p({belief.object})", mode="lines+markers")],
                    layout={"yaxis": {"range": [0, 1], "title": "probability"},
                            "template": "plotly_white", "height": 340,
                            "title": f"flips at: {row['flip_level'] or 'never'}"})
    st.plotly_chart(fig, key="belief_ladder_fig")
    # a static table: the contexts are long sentences, wrapped rather than cut off
    st.table([{"level": lv, "states": levels[lv]["stated"], "context": levels[lv]["context"]}
              for lv in LEVELS], hide_index=True)

with tab_edit:
    c = st.columns(4)
    dictionaries = {d.name: d for d in runs.list_dictionaries(sel.entry)}
    methods = (["rome", "memit", "ft", "steer"] if corpus else ["ft", "steer"]) + (
        ["sae"] if dictionaries else [])
    method = c[0].radio("method", methods, horizontal=True, key="belief_method",
                        help=" ".join(([] if corpus else ["ROME and MEMIT need a corpus for "
                                                          "their key covariance."])
                                      + ([] if dictionaries else ["sae: the model has no "
                                                                  "dictionary (`workbench sae "
                                                                  "train`)."])) or None)
    last = model.cfg.n_layers - 1
    sae = None
    if method == "sae":
        name = c[1].selectbox("dictionary", list(dictionaries), key="belief_sae")
        sae = str(dictionaries[name])
        layer = -1
    else:
        layer = int(c[1].number_input("layer" if method != "memit" else "first layer", 0,
                                      max(0, last - 1) if method in ("rome", "memit")
                                      else last, 0, key="belief_layer"))
    top = None
    if method == "memit":
        top = int(c[2].number_input("last layer", layer, max(layer, last - 1),
                                    min(layer + 1, max(layer, last - 1)), key="belief_top",
                                    help="MEMIT spreads the edit over the MLPs of these "
                                    "layers (`workbench beliefs` picks them from the causal "
                                    "trace)"))
    alpha = 1.0 if method == "memit" else float(c[2].number_input(
                                    "scale", 0.1, 64.0, 1.0, key="belief_alpha",
                                    disabled=method not in ("steer", "sae"),
                                    help="steer: multiple of the difference of means added "
                                    "after the subject (beliefs.steering); sae: multiple of "
                                    f"the new object's mean code its {LATENTS} latents are "
                                    "set to (beliefs.latent)"))
    if c[3].button("Edit a copy", key="belief_edit"):
        try:
            where = (f"with {Path(sae).name}" if sae else f"at layers {layer}-{top}"
                     if top is not None and top > layer else f"at layer {layer}")
            with st.spinner(f"{method} edit {where}"):
                rows, norm = edit_rows(sel.ref, corpus, subject, relation, new, method, layer,
                                       alpha, sae, top)
            st.session_state["belief_edit_rows"] = ((subject, relation, new, method, where),
                                                    rows, norm)
        except ValueError as exc:
            st.error(str(exc))
    saved = st.session_state.get("belief_edit_rows")
    if saved and saved[0][:2] == (subject, relation):
        (_, _, new_obj, meth, lay), rows, norm = saved
        size = {"steer": f"|Δh| = {norm:.3f}", "sae": f"|clamped codes| = {norm:.3f}"}.get(
            meth, f"|ΔW| = {norm:.3f}")
        marked = compute.mark_edit_rows(rows, belief.object, new_obj)
        fact = [r for r in marked if r["kind"] not in compute.STAYS]
        hits = sum(r["result"] == compute.NEW for r in fact)
        nbs = [r for r in marked if r["kind"] == "neighbour"]
        own = [r for r in marked if r["kind"] == "other fact"]
        kept = sum(r["result"] == compute.KEPT for r in nbs)
        kept_own = sum(r["result"] == compute.KEPT for r in own)
        st.caption(f"{meth} edit {lay} to “{new_obj}” ({size}), applied to a copy: "
                   "the cached model is unchanged. After it, "
                   f"{hits} of {len(fact)} prompts of the fact state “{new_obj}”; "
                   f"{kept} of {len(nbs)} neighbours keep their answer; {kept_own} of "
                   f"{len(own)} of {subject}'s other facts are kept")
        st.dataframe(marked, hide_index=True, key="belief_edit_table",
                     column_order=["kind", "result", "before", "after", "prompt"])

with tab_trace:
    if trace is None:
        st.info(f"“{belief.object}” is several tokens; causal tracing reads one token.")
    else:
        st.caption(f"traced on the edit prompt “{belief.prompts[0]}” (its clean p(object) is "
                   f"{trace['clean_prob']:.3f}; the p(object) above is the mean over "
                   f"{len(per_prompt)} prompts)")
        st.plotly_chart(trace_figure(TraceResult.from_dict(trace)), key="belief_trace_fig")

with tab_report:
    out = sel.entry.analysis("beliefs")
    report = ui.report(out, "beliefs")
    if report is None:
        if ui.run_panel(runs.analysis_argv("beliefs", sel.entry, corpus_path), out,
                        "Run the belief tests", key="run_beliefs",
                        why=f"No belief report for {sel.entry.name} yet."):
            st.rerun()
    else:
        memit = (f", MEMIT at layers {report['memit_layers']}" if "memit_layers" in report
                 else "")
        st.caption(f"`{out}`: {report['n_beliefs']} beliefs, edits at layer "
                   f"{report['layer']}{memit}")
        names = {c: f"{c} ({EASYEDIT_NAMES[c]})" if c in EASYEDIT_NAMES and
                 EASYEDIT_NAMES[c] != c else c for c in ("method", "n", *TABLE)}
        st.dataframe([{names[k]: v for k, v in r.items()} for r in method_table(report)],
                     hide_index=True, key="belief_method_table")
        st.caption("kept: the edited person's other facts unchanged (kept_paraphrase: on "
                   "their held-out paraphrases, which no edit sees); portability: the "
                   "country follows an edited city, among those answered right before; "
                   "EasyEdit's names in brackets. The ladder's row is its strongest level.")
        st.plotly_chart(metrics_figure(report), key="belief_metrics_fig")
        if report.get("regimes"):
            st.plotly_chart(regimes_figure(report), key="belief_regimes_fig")
        elif corpus_path is not None:
            st.subheader("Many facts at once, and one after another")
            argv = runs.analysis_argv("beliefs", sel.entry, corpus_path, overwrite=True,
                                      regimes="single,batch,sequential")
            if ui.run_panel(argv, out, "Run the batch and sequential edits",
                            key="run_belief_regimes",
                            why="MEMIT on 10, 50 and every city at once, and 100 edits one "
                            "after another with and without AlphaEdit's projection (the "
                            "report is written again with them)"):
                st.rerun()
        st.plotly_chart(ladder_figure(report), key="belief_report_ladder")
        st.plotly_chart(strength_figure(report), key="belief_report_strength")
        st.plotly_chart(trace_figures(report), key="belief_report_trace")
        if attribution is not None:  # the tested beliefs the attribution report asked about
            for b in report.get("elicit", {}).get("beliefs", []):
                taught_by(attribution, f"{b['subject']}:{b['relation']}")
    if attribution is not None and "verify" in attribution:  # another way to change beliefs
        st.subheader("Changing beliefs by retraining without their documents")
        st.caption("`workbench attribute verify`: the model retrained with the same recipe "
                   "and seed without each method's top documents for the checked facts")
        st.dataframe(compute.verify_rows(attribution["verify"]), hide_index=True,
                     key="belief_retrain_table")
        for line in compute.verify_verdicts(attribution["verify"]):
            st.markdown(line)
