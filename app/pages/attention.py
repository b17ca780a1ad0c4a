"""Attention: every head's pattern on a text (typed, or a corpus document) as a grid, one head
enlarged with the tokens on both axes; long inputs are windowed; the repeated-text mode runs
the text twice and outlines the induction stripe."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app import compute, runs, ui
from app.figures import head_figure, head_grid_figure, layer_head_figure
from circuits.attention import attention_patterns
from workbench import prompts

DEFAULT_TEXT = "anna berg lives in bellport . the cat that the dogs chase eats a cookie ."
MAX_REPEAT_WINDOW = 128  # the default window of a repeated text (a larger one stays fast)


@st.cache_data(show_spinner=False, max_entries=64)
def token_ids(ref: str, text: str) -> list[int]:
    lm = ui.loaded_model(ref)
    with lm.lock:
        return prompts.tokenize(lm.model, text).tolist()


@st.cache_data(show_spinner="running the model", max_entries=16)
def patterns(ref: str, ids: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """`[layer, head, query, key]` patterns and the token strings of `ids`."""
    lm = ui.loaded_model(ref)
    with lm.lock:
        pats = attention_patterns(lm.model, list(ids))
    return pats.pattern.numpy(), pats.tokens


@st.cache_data(show_spinner="reading the corpus", max_entries=64)
def document(path: str, split: str, index: int) -> str:
    return compute.corpus_document(runs.inside(runs.runs_root(), path), split, index)


st.title("Attention")
sel, lm = ui.require_model()
model = lm.model
n_ctx, bos = int(model.cfg.n_ctx), prompts.prepended_bos(model)

source = st.radio("input", ["type text", "corpus document"], horizontal=True, key="attn_source")
if source == "type text":
    text = st.text_area("text", DEFAULT_TEXT, key="attn_text", height=80)
else:
    corpora = runs.list_corpora(sel.root)
    if not corpora:
        st.warning(f"No corpus under {sel.root}; build one with `workbench world build --out "
                   f"{sel.root}/world`.")
        st.stop()
    default = runs.corpus_for(sel.entry, sel.root)
    names = [c.relative_to(sel.root).as_posix() for c in corpora]
    cols = st.columns(3)
    name = cols[0].selectbox("corpus", names, index=corpora.index(default) if default in
                             corpora else 0, key="attn_corpus")
    split = cols[1].selectbox("split", ["val", "test", "train"], key="attn_split")
    n_docs = compute.n_documents(corpora[names.index(name)], split)
    index = cols[2].number_input(f"document (0-{n_docs - 1})", 0, n_docs - 1, 0,
                                 key="attn_doc")
    text = document(name, split, int(index))
    with st.expander("document text"):
        st.write(text)

cols = st.columns([3, 1])
repeated = cols[0].toggle("repeated-text mode: run the text twice and outline the induction "
                          "stripe", key="attn_repeat")
try:
    ids = torch.tensor(token_ids(sel.ref, text))
    period = None
    if repeated:
        room = compute.repeat_room(ids, n_ctx, bos)
        length = room if room <= 1 else cols[1].number_input(
            "tokens repeated", 1, room, room, key=f"attn_repeat_len::{room}",
            help=f"the text's first tokens, run twice (at most {room}: twice that fits "
                 f"n_ctx={n_ctx}); a model's induction may fade over a long period")
        ids, period = compute.repeat_tokens(ids, n_ctx, bos, int(length))
except ValueError as exc:
    st.warning(str(exc))
    st.stop()
n = len(ids)

cols = st.columns(2)
cap = n_ctx - 1 if bos is not None and n > n_ctx else n_ctx
# Repeated text: by default the whole text (up to MAX_REPEAT_WINDOW) and the window at its
# end, so that the second copy's queries and the keys they copy from (one period back) are
# both shown: the induction stripe lies inside the window.
default = min(n, cap, MAX_REPEAT_WINDOW if period else 64)
size = min(n, cap) if n <= 8 else cols[0].slider(
    "window (tokens shown)", 8, min(n, cap), default, key=f"attn_size::{n}::{repeated}")
start = 0
if n > size:
    start = cols[1].slider("window start", 0, n - size, n - size if period else 0,
                           key=f"attn_start::{n}::{size}::{repeated}")
win = compute.plan_window(n, n_ctx, size, start, bos is not None)
run_ids, offset = compute.window_tokens(ids, win, bos)
full, tokens = patterns(sel.ref, tuple(run_ids.tolist()))
pattern = torch.from_numpy(full)
shown = pattern[:, :, offset:offset + win.size, offset:offset + win.size]
shown_tokens = tokens[offset:offset + win.size]

notes = [f"{n} tokens" + (f" (the text's {period} tokens twice)" if period else "")]
if (win.context_start, win.context_stop) != (0, n):
    notes.append(f"the input is longer than the model's n_ctx={n_ctx}: for this window it "
                 f"reads tokens {win.context_start}-{win.context_stop - 1}"
                 + (" after a BOS" if win.context_start > 0 and bos is not None else ""))
if win.size < n:
    outside = 1 - float(shown.sum(-1).mean())
    notes.append(f"showing positions {win.start}-{win.stop - 1}; keys before the window take "
                 f"{outside:.0%} of these queries' attention")
st.caption("; ".join(notes))

scores, stripe = None, None
if period is not None:  # the repeated text fits n_ctx: the model ran on all of it
    stripe = compute.induction_stripe(n, period, start=0 if bos is None else 1)
    scores = compute.stripe_scores(pattern, stripe)
n_layers, n_heads = pattern.shape[:2]
# The enlarged head is the user's: kept across modes and inputs (reset only when the model
# has no such head); the head with the highest stripe score is offered, never imposed.
if st.session_state.get("attn_layer") not in range(n_layers):
    st.session_state["attn_layer"] = n_layers - 1
if st.session_state.get("attn_head") not in range(n_heads):
    st.session_state["attn_head"] = 0


def enlarge(layer: int, head: int) -> None:
    st.session_state["attn_layer"], st.session_state["attn_head"] = layer, head


cols = st.columns([1, 1, 2])
layer = cols[0].selectbox("layer", range(n_layers), key="attn_layer")
head = cols[1].selectbox("head", range(n_heads), key="attn_head")
if scores is not None:
    best = divmod(int(scores.argmax()), n_heads)
    cols[2].button(f"enlarge L{best[0]}H{best[1]}, the highest stripe score "
                   f"({float(scores[best]):.2f})", key="attn_best", on_click=enlarge, args=best,
                   disabled=(layer, head) == best)

if scores is not None:
    top = float(scores.max())
    st.caption("stripe score: each head's mean attention from the second copy's tokens to the "
               "token after their first occurrence, over the whole repeated text"
               + ("" if top >= 0.1 else f"; no head reaches 0.1 on this text (at most "
                  f"{top:.2f}): the model may not copy over a period of {period} tokens; "
                  "repeat fewer tokens"))
grid_col, head_col = st.columns([1, 1])
with grid_col:
    st.subheader("every head" + (" (stripe score)" if repeated else ""))
    st.plotly_chart(head_grid_figure(shown, scores, (layer, head)), key="attn_grid")
    if scores is not None:
        st.plotly_chart(layer_head_figure(scores, "mean attention on the induction stripe"),
                        key="attn_stripe_scores")
with head_col:
    st.subheader(f"L{layer}H{head}")
    st.plotly_chart(head_figure(shown[layer, head], shown_tokens, win.start, stripe,
                                title=f"L{layer}H{head} on {sel.label}"), key="attn_head_fig")
