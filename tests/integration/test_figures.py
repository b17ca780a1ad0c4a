"""Every figure the workbench writes passes the figure check (`workbench.figcheck`): each
registered analysis' `FIGURES` made from a real report of the tiny model (the induction,
circuit, probe, ICL and attribution reports of the `app_runs` fixture, a small beliefs report made
here), the training and evaluation figures, the sweep's figures, the dashboard's own figures
on the tiny model's inputs, and every `.fig.json` file written into the runs folder."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from workbench.analysis import analyses
from workbench.figcheck import figure_problems

Report = dict[str, Any]


def problems_of(figures: dict[str, go.Figure]) -> dict[str, list[str]]:
    return {name: p for name, fig in figures.items() if (p := figure_problems(fig))}


@pytest.fixture(scope="module")
def loaded(app_runs: Path) -> tuple[Any, Any]:
    from workbench.models.loader import load
    from workbench.world import load_corpus

    return load(app_runs / "tiny"), load_corpus(app_runs / "world")


@pytest.fixture(scope="module")
def reports(app_runs: Path, loaded: tuple[Any, Any]) -> dict[str, Report]:
    """A real report of every registered analysis: those `app_runs` wrote, and beliefs."""
    from beliefs.factbase import world_facts
    from beliefs.rome import RomeConfig
    from beliefs.suite import BeliefsConfig, run
    from circuits.tracing import TraceConfig

    folder = app_runs / "tiny" / "analyses"
    out = {kind: json.loads((folder / f"{kind}.json").read_text())
           for kind in ("induction", "circuit", "probe", "icl", "attribute")}
    model, corpus = loaded
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out["beliefs"] = run(model, corpus, BeliefsConfig(
            n=3, n_trace=2, cov_tokens=2000, trace=TraceConfig(n_samples=3),
            rome=RomeConfig(n_prefixes=2)), facts=world_facts(corpus.world(),
                                                                corpus.fact_table()),
            ref=str(app_runs / "tiny"), progress=False)
    finally:
        torch.set_num_threads(n)
    return out


def test_every_analysis_figure(reports: dict[str, Report]) -> None:
    registered = analyses()
    assert set(registered) <= set(reports), "a registered analysis has no report here"
    figures, empty = {}, []
    for kind, module in registered.items():
        for suffix, make in module.FIGURES.items():
            fig = make(reports[kind])
            if fig is None:
                empty.append(kind + suffix)
            else:
                figures[kind + suffix] = fig
    assert set(empty) <= {"icl.checkpoints.fig.json"}  # the fixture measured no checkpoints
    # ICL over training from the real measurements: one checkpoint (the shipped demo's
    # case: no fractional step ticks) and three
    icl = reports["icl"]
    make = registered["icl"].FIGURES[".checkpoints.fig.json"]
    for steps in ([4000], [0, 200, 400]):
        report = copy.deepcopy(icl)
        report["checkpoints"] = [{"step": s, "tasks": icl["tasks"]} for s in steps]
        figures[f"icl.checkpoints {steps}"] = make(report)
    assert problems_of(figures) == {}


def test_core_and_sweep_figures(app_runs: Path, loaded: tuple[Any, Any]) -> None:
    from sweep.figures import FIGURES, ability_figure
    from workbench.evaluate import EvalConfig, evaluate
    from workbench.layout import METRICS
    from workbench.plots import eval_figure, training_figure

    model, corpus = loaded
    results = evaluate(model, corpus, EvalConfig(max_fact_items=40, max_agreement_items=40,
                                                 induction_batch=4),
                       model_ref=str(app_runs / "tiny"), progress=False)
    figures = {"training": training_figure(app_runs / "tiny" / METRICS),
               "eval": eval_figure(results), "eval named": eval_figure(results, name="tiny")}
    assert figures["eval"].layout.title.text.startswith("What tiny knows")
    sweep = json.loads((app_runs / "sweeps" / "micro" / "sweep.json").read_text())
    for suffix, make in FIGURES.items():
        fig = make(sweep)
        assert fig is not None, suffix
        figures["sweep" + suffix] = fig
    for name in sweep["abilities"]:
        for scale in ("N", "C"):
            figures[f"sweep ability {name} {scale}"] = ability_figure(sweep, name, scale)
    assert problems_of(figures) == {}


def test_dashboard_figures(app_runs: Path, loaded: tuple[Any, Any],
                           reports: dict[str, Report]) -> None:
    from app import compute
    from app import figures as af
    from circuits.attention import attention_patterns, logit_lens
    from icl.mechanism import answer_positions
    from workbench import prompts
    from workbench.hooks import hook_name

    model, corpus = loaded
    figures: dict[str, go.Figure] = {}
    # Attention: repeated text, every head, the stripe scores, one head enlarged
    bos = prompts.prepended_bos(model)
    ids = prompts.tokenize(model, "anna berg lives in velmora . the dogs run")
    ids, period = compute.repeat_tokens(ids, model.cfg.n_ctx, bos)
    pats = attention_patterns(model, ids.tolist())
    stripe = compute.induction_stripe(len(ids), period, start=0 if bos is None else 1)
    scores = compute.stripe_scores(pats.pattern, stripe)
    figures["head grid"] = af.head_grid_figure(pats.pattern, scores, (1, 0))
    figures["stripe scores"] = af.layer_head_figure(scores, "mean attention on the stripe")
    figures["one head"] = af.head_figure(pats.pattern[1, 0], pats.tokens, 0, stripe, "L1H0")
    # Logit lens
    lens = logit_lens(model, prompts.tokenize(model, "anna berg lives in"), k=3)
    tops = [[list(model.to_str_tokens(lens.top_ids[p, i])) for i in range(len(lens.tokens))]
            for p in range(len(lens.layers))]
    figures["logit lens"] = af.logit_lens_figure(lens, tops)
    # Induction composition and probe tasks from the reports
    for mode in reports["induction"]["composition"]:
        figures[f"composition {mode}"] = af.composition_figure(reports["induction"], mode)
    for task in reports["probe"]["tasks"]:
        figures[f"probe task {task}"] = af.probe_task_figure(reports["probe"], task)
    # Activations: a PCA coloured by the label with the most classes
    acts = app_runs / "tiny" / "acts_val.h5"
    attrs, hooks = compute.store_overview(acts)
    names = compute.label_names(app_runs / "world")
    labels = [x.strip() for x in str(attrs["labels"]).split(",") if x.strip() != "none"]
    label = max(labels, key=lambda k: len(names.get(k, [])))
    coords, explained, rows = compute.store_pca(acts, hooks[-1]["hook"], 500, label, names)
    figures["pca"] = af.pca_figure(coords, rows, explained, f"{hooks[-1]['hook']} by {label}")
    # ICL: one prompt's candidates and the induction heads' attention, with and without a
    # demonstration that repeats the query's input
    items = corpus.eval_items("fewshot")
    heads = [(1, 0), (1, 2)]
    for kind, item in (("match", next(i for i in items if answer_positions(model, i)[0])),
                       ("no match", next(i for i in items if int(i["k"]) > 0
                                         and not answer_positions(model, i)[0]))):
        probs = prompts.candidate_logprobs(model, [item["prefix"]], item["candidates"])[0]
        figures[f"candidates {kind}"] = af.candidates_figure(
            item["candidates"], probs.exp().tolist(), item["answer"])
        tokens = prompts.encode_prompt(model, item["prefix"])
        _, cache = model.run_with_cache(torch.tensor([tokens]))
        attention = {f"L{layer}H{h}": cache[hook_name(layer, "attn.hook_pattern")][0, h, -1]
                     .tolist() for layer, h in heads}
        figures[f"icl attention {kind}"] = af.icl_attention_figure(
            [model.tokenizer.decode([t]) for t in tokens], attention,
            answer_positions(model, item)[0])
    assert [a.text for a in figures["icl attention no match"].layout.annotations] == [
        "no demonstration has the query's input: nothing to mark"]
    assert problems_of(figures) == {}


def test_every_written_figure_file(app_runs: Path) -> None:
    """The `.fig.json` files the commands wrote into the runs folder, read back."""
    files = sorted(app_runs.rglob("*.fig.json"))
    assert {f.name for f in files} >= {"training.fig.json", "induction.heads.fig.json",
                                       "probe.fig.json", "icl.accuracy.fig.json",
                                       "attribute.retrieval.fig.json",
                                       "attribute.tracin.fig.json", "sweep.loss.fig.json"}
    found = {f.relative_to(app_runs).as_posix(): pio.from_json(f.read_text()) for f in files}
    assert problems_of(found) == {}
