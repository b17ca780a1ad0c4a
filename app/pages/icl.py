"""In-context learning: the `workbench icl` report of the picked model (accuracy and
log-probability against the number of demonstrations per task, the induction heads ablated,
over checkpoints), and one few-shot prompt live: its demonstrations, the candidates'
probabilities and the induction heads' attention from the query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import runs, ui
from app.figures import candidates_figure, icl_attention_figure
from icl.figures import accuracy_figure, checkpoints_figure, logprob_figure, mechanism_figure
from icl.mechanism import answer_positions
from icl.summary import summary
from workbench.hooks import hook_name
from workbench.prompts import candidate_logprobs, encode_prompt


@st.cache_data(show_spinner="reading the few-shot items", max_entries=8)
def items_of(corpus: str) -> list[dict[str, Any]]:
    from workbench.world import load_corpus

    loaded = load_corpus(Path(corpus))
    if "fewshot" not in loaded.manifest.get("files", {}).get("eval", {}):
        return []
    return loaded.eval_items("fewshot")


@st.cache_data(show_spinner="running the model", max_entries=64)
def look(ref: str, item: dict[str, Any], heads: tuple[tuple[int, int], ...]
         ) -> tuple[list[float], list[str], dict[str, list[float]], list[int]]:
    """Candidate probabilities, the prompt's tokens, each head's attention from the last
    token, and the positions of the matching demonstration's answer."""
    import torch

    lm = ui.loaded_model(ref)
    with lm.lock:
        model = lm.model
        probs = candidate_logprobs(model, [item["prefix"]], item["candidates"])[0].exp()
        ids = encode_prompt(model, item["prefix"])
        names = {hook_name(layer, "attn.hook_pattern") for layer, _ in heads}
        device = next(model.parameters()).device
        _, cache = model.run_with_cache(torch.tensor([ids], device=device),
                                        names_filter=lambda n: n in names)
        attention = {f"L{layer}H{h}": cache[hook_name(layer, "attn.hook_pattern")][0, h, -1]
                     .float().cpu().tolist() for layer, h in heads}
        match = answer_positions(model, item)[0] if item["demos"] else []
        tokens = [model.tokenizer.decode([i]) for i in ids]
    return probs.tolist(), tokens, attention, match


st.title("In-context learning")
sel = ui.require_selection()
entry = sel.entry
out = entry.analysis("icl")
corpus = runs.corpus_for(entry, sel.root)
report = ui.report(out, "icl")
if report is None:
    st.subheader(f"No in-context learning report for {entry.name} yet")
    if corpus is None:
        st.info("`workbench icl` reads a world corpus's few-shot items; put one in the runs "
                "folder (`workbench world build`, or `workbench world retokenize` for a "
                "Hugging Face model)")
    elif ui.run_panel(runs.analysis_argv("icl", entry, corpus), out, "Measure in-context learning",
                      key="run_icl"):
        st.rerun()
    st.stop()

st.caption(f"`{out}` (the run's latest checkpoint; the sidebar's step does not apply here)")
st.code(summary(report), language="text", wrap_lines=True)
never = [t for t, v in report["tasks"].items()
         if all(c["accuracy"] == 0 for c in v["k"].values())]
if never:
    st.warning(f"{', '.join(never)}: accuracy 0.00 at every k: the model never ranks the right "
               "answer first, with or without demonstrations (the log-probability chart shows "
               "how far it is)")
c = st.columns(2)
c[0].plotly_chart(accuracy_figure(report), key="icl_accuracy")
c[1].plotly_chart(logprob_figure(report), key="icl_logprob")
one_checkpoint = entry.kind == "run" and len(entry.steps) == 1
for name, make in (("icl_mechanism", mechanism_figure), ("icl_checkpoints",
                                                          checkpoints_figure)):
    fig = None if name == "icl_checkpoints" and one_checkpoint else make(report)
    if fig is not None:
        st.plotly_chart(fig, key=name)
if one_checkpoint:
    st.info(f"No accuracy over training: {ui.ONE_CHECKPOINT}.")

st.subheader("One prompt")
items = items_of(str(corpus)) if corpus is not None else []
if not items:
    st.info("no corpus with few-shot items next to this model: nothing to show live")
    st.stop()
cols = st.columns(3)
task = cols[0].selectbox("task", list(report["tasks"]), key="icl_task")
ks = sorted({int(i["k"]) for i in items if i["task"] == task})
k = cols[1].select_slider("demonstrations (k)", ks, value=ks[-1], key="icl_k")
pool = [i for i in items if i["task"] == task and int(i["k"]) == k]
index = int(cols[2].number_input("item", 0, len(pool) - 1, 0, key="icl_item"))
item = pool[index]
mech = report.get("mechanism") or {}
heads = tuple((int(n[1:].split("H")[0]), int(n.split("H")[1]))
              for n in mech.get("induction_heads", []))
probs, tokens, attention, match = look(sel.ref, item, heads)
st.code(item["prefix"] + " ▁", language="text", wrap_lines=True)
st.caption(f"right answer **{item['answer']}**" + (
    f"; the model's prior says **{item['prior']}**" if task == "flipped" else ""))
st.plotly_chart(candidates_figure(item["candidates"], probs, item["answer"]), key="icl_probs")
if attention:
    st.plotly_chart(icl_attention_figure(tokens, attention, match), key="icl_attention")
elif mech:
    st.info(mech.get("note", "no induction heads in the report"))
