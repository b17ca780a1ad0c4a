"""Features: the sparse dictionaries of the picked model (`MODEL/sae/NAME/`): training curve,
reconstruction and the planted-label recovery table of its `sae eval` report, and per latent
its top-activating contexts (token highlighted), activation histogram, logit effect and the
label it matches best; without a dictionary or a report, the command that makes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from app import runs, ui
from features.figures import exposure_figure, recovery_figure
from features.io import REPORT
from features.latents import contexts

TRAIN_TOKENS = 2_000_000  # what the dashboard's button trains on (minutes on a laptop)


def train_panel(sel: ui.Selection, corpus: Path | None) -> None:
    if corpus is None:
        st.info("A dictionary is trained on the model's activations over a world corpus; "
                "put one in the runs folder (`workbench world build`).")
        return
    hook = st.text_input("hook", "blocks.0.hook_resid_post", key="sae_new_hook",
                         help="a TransformerLens hook name; the middle block's "
                         "hook_resid_post is the usual choice")
    out = sel.entry.path / "sae" / hook.replace(".", "-")
    args = ["sae", "train", "--model", runs._rel(sel.entry.path), "--corpus",
            runs._rel(corpus), "--hook", hook, "--tokens", str(TRAIN_TOKENS), "--out",
            runs._rel(out)]
    if ui.run_panel(args, out, "Train a TopK dictionary", key="run_sae_train"):
        st.rerun()


def card_view(card: dict[str, Any], tokens: Any, decode: Any) -> None:
    """One latent: labels, contexts, histogram, logit effect."""
    labels = ", ".join(f"{x['value']} (F1 {x['f1']:.2f})" for x in card["labels"]) or "none"
    st.markdown(f"**latent {card['latent']}**: active on {card['fire_rate']:.2%} of tokens; "
                f"best latent of: {labels}")
    cols = st.columns([3, 2])
    if tokens is not None and card["top"]:
        lines = [f"`{c['value']:.2f}` … {c['left']} **:orange[{c['token']}]** {c['right']}"
                 for c in contexts(tokens, card["top"], decode)]
        cols[0].markdown("  \n".join(lines))
    else:
        cols[0].caption("no activation on the evaluated rows" if tokens is not None else
                        "the corpus is not in the runs folder: no contexts")
    hist = card.get("histogram")
    if hist:
        centers = [(a + b) / 2 for a, b in zip(hist["edges"], hist["edges"][1:])]
        fig = go.Figure(go.Bar(x=centers, y=hist["counts"], name="rows per bin",
                               showlegend=True))
        fig.update_layout(height=220, margin={"t": 30, "b": 30}, title="activations (> 0)",
                          xaxis_title="activation", yaxis_title="rows")
        cols[1].plotly_chart(fig, key="sae_hist")
    if "raises" in card:
        st.caption("logit effect (decoder direction through the unembedding): raises "
                   + ", ".join(card["raises"]) + " · lowers " + ", ".join(card["lowers"]))


st.title("Features")
sel = ui.require_selection()
corpus = runs.corpus_for(sel.entry, sel.root)
found = runs.list_dictionaries(sel.entry)
if not found:
    st.subheader(f"No dictionary for {sel.entry.name} yet")
    train_panel(sel, corpus)
    st.stop()

names = [d.name for d in found]
folder = found[names.index(st.selectbox("dictionary", names, key="sae_dict"))]
meta = json.loads((folder / "workbench.json").read_text())
shape = meta["dictionary"]
st.caption(f"`{folder}`: {shape['arch']}, {shape['d_sae']} latents at `{meta['hook']}`"
           + (f" -> `{meta['target']}` (transcoder)" if meta.get("target") else "")
           + f"; trained on {meta['final']['tokens']:,} rows, final FVU "
           f"{meta['final']['fvu']:.3f}, L0 {meta['final']['l0']:.1f}")
if (folder / "training.fig.json").is_file():
    with st.expander("training curve"):
        st.plotly_chart(pio.from_json((folder / "training.fig.json").read_text()),
                        key="sae_training")
out = folder / REPORT
report = ui.report(out, "sae")
if report is None:
    st.subheader("Not evaluated yet")
    if corpus is not None:
        args = ["sae", "eval", "--model", runs._rel(sel.entry.path), "--corpus",
                runs._rel(corpus), "--sae", runs._rel(folder), "--out", runs._rel(out)]
        if ui.run_panel(args, out, "Evaluate against the planted labels", key="run_sae_eval"):
            st.rerun()
    st.stop()

st.code(report["summary"]["text"], language="text", wrap_lines=True)
st.plotly_chart(recovery_figure(report), key="sae_recovery")
exposure = exposure_figure(report)
if exposure is not None:
    st.plotly_chart(exposure, key="sae_exposure")

st.subheader("Latents")
cards = report.get("latents", [])
query = st.text_input("search by label or token (pos:NOUN, city:, tessaly ...)",
                      key="sae_query").strip().lower()
if query:
    cards = [c for c in cards
             if any(query in x["value"].lower() for x in c["labels"])
             or any(query == t.lower() for t in c.get("raises", []))]
else:  # the labelled latents first, by their best F1
    cards = sorted(cards, key=lambda c: -max((x["f1"] for x in c["labels"]), default=-1))
if not cards:
    st.info("No latent matches.")
    st.stop()
shown = cards[:200]
pick = st.selectbox("latent", range(len(shown)), key="sae_latent",
                    format_func=lambda i: f"{shown[i]['latent']}: "
                    + (", ".join(x["value"] for x in shown[i]["labels"][:3]) or "-"))
tokens, decode = None, str
if corpus is not None and Path(report["corpus"]).resolve() == corpus.resolve():
    from tokenizers import Tokenizer

    from workbench.world.loader import load_corpus

    loaded = load_corpus(corpus)
    tokens = loaded.tokens(report["config"]["split"])
    tok = Tokenizer.from_file(str(loaded.tokenizer_path))

    def decode(t: int) -> str:
        return tok.id_to_token(t) or f"<{t}>"
card_view(shown[pick], tokens, decode)
