"""Scaling: a sweep analyzed by `workbench sweep analyze` (its `sweep.json`): every member's
loss curve, the fitted law with its points, each ability against N or C (the discontinuous
metric beside the continuous one), the emergence verdicts, and a member opened in the other
pages (it becomes the sidebar's model)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import runs, ui
from sweep.figures import ability_figure, curves_figure, law_figure


def open_member(name: str) -> None:
    """Make the member's run the sidebar's model (a callback: it runs before the sidebar
    is drawn again)."""
    st.session_state["model_name"] = name


st.title("Scaling")
root = ui.root()
found = runs.list_sweeps(root)
if not found:
    st.subheader("No analyzed sweep in the runs folder yet")
    st.code("workbench sweep plan micro --out runs/micro\nworkbench sweep run runs/micro\n"
            "workbench sweep analyze runs/micro", language="bash")
    st.stop()
labels = [p.parent.relative_to(root).as_posix() or "." for p in found]
label = st.selectbox("sweep", labels, key="scaling_sweep")
path = found[labels.index(label)]
report = ui.report(path, "scaling")
if report is None:
    st.stop()
members = report["members"]
st.caption(f"`{path}`: {len(members)} member(s)"
           + (f"; without a checkpoint yet: {', '.join(report['left_out'])}"
              if report["left_out"] else ""))

c = st.columns(2)
curves = curves_figure(report)
if curves is not None:
    c[0].plotly_chart(curves, key="scaling_curves")
scale_law = c[1].radio("loss against", ["N", "D", "C"], horizontal=True, key="scaling_law")
law = law_figure(report, scale_law)
if law is not None:
    c[1].plotly_chart(law, key="scaling_law_fig")
laws = {k: v for k, v in report["laws"].items() if k != "note"}
if "note" in report["laws"]:
    c[1].info(report["laws"]["note"])
for key, fit in laws.items():
    if key != "joint":
        lo, hi = fit["ci"].get("alpha", [float("nan"), float("nan")])
        c[1].caption(f"loss vs {key}: alpha {fit['alpha']:.3f} [{lo:.3f}, {hi:.3f}], "
                     f"R² {fit['r2']:.3f}, {fit['n']} members")
    else:
        c[1].caption(f"joint: L = {fit['e']:.3g} + {fit['a']:.3g}/N^{fit['alpha']:.3f} + "
                     f"{fit['b']:.3g}/D^{fit['beta']:.3f} (R² {fit['r2']:.3f})")

abilities = report["abilities"]
if abilities:
    st.subheader("Abilities")
    c = st.columns([2, 1])
    name = c[0].selectbox("ability", list(abilities), key="scaling_ability")
    scale = c[1].radio("against", ["N", "C"], horizontal=True, key="scaling_scale")
    st.plotly_chart(ability_figure(report, name, scale), key="scaling_ability_fig")
    rows = [{"ability": n,
             **{f"{m} vs {s}": a[m][s]["verdict"] for m in ("discrete", "continuous")
                for s in ("N", "C")}}
            for n, a in abilities.items()]
    st.dataframe(rows, hide_index=True, key="scaling_verdicts")
    st.markdown(report["differ"]["statement"])

st.subheader("Open a member in the other pages")
picked = st.selectbox("member", [m["name"] for m in members], key="scaling_member")
member = next(m for m in members if m["name"] == picked)
model = runs.member_model(root, Path(path).parent, member)
st.caption(f"N = {member['n_params']:,}, D = {member['tokens']:,}, C = {member['compute']:.3g}"
           + ("" if member["final_loss"] is None else
              f", final validation loss {member['final_loss']:.3f}"))
if model is None:
    st.info(f"its run ({member.get('run')}) is not a model under the runs folder")
else:
    st.button(f"open {model}", key="scaling_open", on_click=open_member, args=(model,),
              help="makes it the sidebar's model; then pick any page")
    st.page_link("pages/models.py", label="Models page", icon=":material/model_training:")
