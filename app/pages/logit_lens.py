"""Logit lens: the top tokens read from the residual stream after each layer, at every
position of a prompt (the last `n_ctx` tokens of a long one)."""

from __future__ import annotations

import streamlit as st

from app import compute, ui
from app.figures import logit_lens_figure
from circuits.attention import logit_lens
from workbench import prompts

DEFAULT_PROMPT = "anna berg lives in"


@st.cache_data(show_spinner="running the logit lens", max_entries=32)
def lens(ref: str, text: str, k: int) -> tuple[object, list[list[list[str]]], int]:
    """The lens of the prompt's last n_ctx tokens, its top-k strings `[point][pos][k]`, and the
    position of its first token in the prompt."""
    lm = ui.loaded_model(ref)
    model = lm.model
    with lm.lock:
        ids = prompts.tokenize(model, text)
        bos = prompts.prepended_bos(model)
        win = compute.plan_window(len(ids), model.cfg.n_ctx, model.cfg.n_ctx, len(ids),
                                  bos is not None)
        run_ids, offset = compute.window_tokens(ids, win, bos)
        result = logit_lens(model, run_ids, k=k)
        tops = [[list(model.to_str_tokens(result.top_ids[p, i]))
                 for i in range(result.top_ids.shape[1])] for p in range(len(result.layers))]
    return result, tops, win.start - offset


st.title("Logit lens")
sel, lm = ui.require_model()
cols = st.columns([4, 1])
text = cols[0].text_input("prompt", DEFAULT_PROMPT, key="lens_text")
k = cols[1].number_input("top k", 1, 20, 5, key="lens_k")
try:
    result, tops, start = lens(sel.ref, text, int(k))
except ValueError as exc:
    st.warning(str(exc))
    st.stop()
if start > 0:
    st.caption(f"the prompt is longer than n_ctx={lm.model.cfg.n_ctx}: showing its last "
               "tokens")
st.plotly_chart(logit_lens_figure(result, tops, start), key="lens_fig")

n_pos = len(result.tokens)
pos = st.select_slider("position", options=list(range(n_pos)), value=n_pos - 1,
                       format_func=lambda i: f"{start + i}:{result.tokens[i]}", key="lens_pos")
st.dataframe(compute.lens_rows(result, tops, pos), hide_index=True, key="lens_table")
