"""`workbench sae eval`: a dictionary's reconstruction and its latents against planted truth.

One pass over a corpus split (`Config.max_tokens` of it) with the model runs each batch three
times: clean, with the dictionary's reconstruction spliced in at its hook (a transcoder's at
its target hook), and with that activation zeroed. It reports:

- **reconstruction**: L0, fraction of variance unexplained (FVU), cross-entropy loss clean /
  spliced / zero-ablated and the share recovered `(zero - spliced) / (zero - clean)`, dead
  latents (never active on these tokens) and dense ones (active on > `dense` of them);
- **truth** (`features.truth`), on the word-final rows of every probe task (`probe.tasks`:
  part of speech, depth, subject number, noun class, animacy, sentiment, and each person's
  city, job, pet, food and country at their first mention in a document): per label value
  the best single latent's F1 (active > 0), precision, recall and AUROC; beside it the best
  residual-stream dimension and the best MLP neuron of the hook's block (each at its best
  threshold, either sign), and the linear probe's accuracy at this layer from the model's
  `analyses/probe.json` when it exists; the share of values with a latent of F1 >= 0.8;
- **absorption**: country latents silent where a city latent fires (people's rows);
- **exposure**: per person, the recall of their city's best latent against how often the
  world mentions them;
- **latents**: a card per latent (`features.latents`): fire rate, its largest activations
  (offsets into the split), the label values it is the best latent of, the tokens its
  decoder direction raises and lowers through the unembedding.

    from features import evaluate
    report = evaluate.from_ref("runs/demo", evaluate.Config(sae="runs/demo/sae/resid2"))
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from features.collect import collect
from features.figures import exposure_figure, recovery_figure
from features.io import load_dictionary
from features.latents import latent_cards, logit_effects
from features.truth import absorption, best_latents, best_units
from workbench.analysis import FigureMaker, Report
from workbench.hooks import weights_checksum

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import ModelRef
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)
KIND = "sae"
SCHEMA = "workbench.sae/1"
FIGURES: dict[str, FigureMaker] = {".fig.json": recovery_figure,
                                   ".exposure.fig.json": exposure_figure}
BARS = {"l0_max": 32, "ce_recovered": 0.9, "pos_f1": 0.8, "number_category_f1": 0.7,
        "beats_neuron_share": 0.8}
"""Issue 40's bars, checked in every report (`bars`)."""


@dataclass
class Config:
    """What `workbench sae eval` measures.

    Args:
        sae: the dictionary's folder (`workbench sae train --out`).
        split: the corpus split read.
        max_tokens: tokens of it run through the model.
        batch_size: sequences per forward pass.
        tasks: probe suites or tasks whose labels are scored (`probe.tasks`).
        max_examples: rows per task (a seeded subset when there are more).
        dense: a latent active on more than this share of tokens is dense.
        seed: the row subsets.
    """

    sae: str = ""
    split: str = "val"
    max_tokens: int = 100_000
    batch_size: int = 16
    tasks: str = "syntax,semantics,facts"
    max_examples: int = 20_000
    dense: float = 0.1
    seed: int = 0


def check_model(meta: dict[str, Any], model: Model, sae: str | Path) -> None:
    """Refuse a dictionary trained on another model's activations (weight checksum)."""
    mine = weights_checksum(model)
    if meta.get("model_checksum") != mine:
        raise ValueError(
            f"dictionary {sae} was trained on another model's activations (weight checksum "
            f"{str(meta.get('model_checksum'))[:12]}..., this model's {mine[:12]}...; it was "
            f"made for {meta.get('model')}); pass that model, or train one for this model with "
            "`workbench sae train`")


def run(model: Model, corpus: Corpus | None, cfg: Config | None = None, *,
        ref: str | ModelRef | None = None, progress: bool = True) -> Report:
    """Evaluate the dictionary `cfg.sae` on a loaded model and its world corpus."""
    from probe.layers import check_corpus
    from probe.tasks import resolve_tasks, task_examples

    cfg = cfg or Config()
    if not cfg.sae:
        raise ValueError("no dictionary given: pass --sae DIR (made by `workbench sae train`)")
    if corpus is None:
        raise ValueError("the evaluation needs the model's world corpus; pass --corpus PATH")
    t0 = time.perf_counter()
    tasks = resolve_tasks(cfg.tasks)
    d, meta = load_dictionary(cfg.sae)
    check_model(meta, model, cfg.sae)
    check_corpus(model, corpus)
    got = collect(model, corpus, d, meta, split=cfg.split, max_tokens=cfg.max_tokens,
                  batch_size=cfg.batch_size, progress=progress)
    recon = got.reconstruction(cfg.dense)
    world = corpus.world()
    rng = np.random.default_rng(cfg.seed)
    probe = _probe_accuracy(ref, meta["hook"])
    results: dict[str, Any] = {}
    best: dict[str, list[int]] = {}
    task_rows: dict[str, Any] = {}
    for task in tasks:
        ex = task_examples(task, got.labels, got.meta["doc"], got.meta["token"], world)
        if len(ex.rows) > cfg.max_examples:
            keep = np.sort(rng.choice(len(ex.rows), cfg.max_examples, replace=False))
            ex.rows, ex.y, ex.groups = ex.rows[keep], ex.y[keep], ex.groups[keep]
        if not len(ex.rows):
            continue
        codes = got.codes.subset(ex.rows)
        n_classes = len(ex.classes)
        latents = best_latents(codes, ex.y, n_classes)
        resid = best_units(got.residual[ex.rows].astype(np.float32), ex.y, n_classes)
        mlp = (best_units(got.neurons[ex.rows].astype(np.float32), ex.y, n_classes)
               if got.neurons is not None else [None] * n_classes)
        values = []
        for c, name in enumerate(ex.classes):
            if latents[c]["n"] == 0:
                continue
            values.append({"value": name, "n": latents[c]["n"], "latent": latents[c],
                           "residual": resid[c], "neuron": mlp[c]})
        best[task.name] = [v["latent"] for v in latents]
        task_rows[task.name] = (ex, codes)
        results[task.name] = _task_summary(task, values, probe)
    fire_rate = recon.pop("fire_rate")
    best_by_label = {f"{task}:{v['value']}": v["latent"] for task, t in results.items()
                     for v in t["values"]}
    tok = model.tokenizer
    cards = latent_cards(got.codes, got.meta["offset"], fire_rate, best_by_label,
                         logit_effects(model, d),
                         (lambda t: tok.decode([t]).strip()) if tok is not None else str)
    report = {
        "schema": SCHEMA, "model": str(ref) if ref is not None else model.cfg.model_name,
        "sae": str(cfg.sae), "dictionary": meta["dictionary"], "hook": meta["hook"],
        "target": meta.get("target"), "corpus": str(corpus.path), "config": asdict(cfg),
        "n_tokens": got.n_tokens, "reconstruction": recon, "tasks": results,
        "absorption": _absorption(task_rows, best, world),
        "exposure": _exposure(task_rows, best, world), "latents": cards,
        "probe_source": probe.get("source"), "elapsed_s": round(time.perf_counter() - t0, 2),
    }
    report["bars"] = bars(report)
    report["summary"] = {"text": _text(report)}
    return report


def _task_summary(task: Any, values: list[dict[str, Any]], probe: dict[str, Any]
                  ) -> dict[str, Any]:
    f1 = np.array([v["latent"]["f1"] for v in values])
    neuron = np.array([v["neuron"]["f1"] if v["neuron"] else -1.0 for v in values])
    resid = np.array([v["residual"]["f1"] for v in values])
    return {"kind": task.kind, "label": task.label, "values": values,
            "mean_f1": round(float(f1.mean()), 4) if len(f1) else None,
            "share_f1_08": round(float((f1 >= 0.8).mean()), 4) if len(f1) else None,
            "mean_neuron_f1": round(float(neuron.mean()), 4) if len(f1) else None,
            "mean_residual_f1": round(float(resid.mean()), 4) if len(f1) else None,
            "beats_neuron": round(float((f1 > neuron).mean()), 4) if len(f1) else None,
            "beats_residual": round(float((f1 > resid).mean()), 4) if len(f1) else None,
            "probe_accuracy": probe.get("tasks", {}).get(task.name)}


def _probe_accuracy(ref: Any, hook: str) -> dict[str, Any]:
    """The linear probe's accuracy per task at the hook's layer, from the model's probe
    report (`workbench probe`), when it has one for that layer."""
    from workbench.hooks import layer_of

    if ref is None:
        return {}
    from workbench.models.refs import ModelRef

    path = ModelRef.of(ref).report_path("probe")
    layer = layer_of(hook)
    if not path.exists() or layer is None:
        return {}
    probe_layer = layer + 1 if hook.endswith("hook_resid_post") else layer
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    tasks = {}
    for name, t in report.get("tasks", {}).items():
        row = next((r for r in t.get("layers", []) if r.get("layer") == probe_layer), None)
        if row is not None:
            tasks[name] = round(float(row["accuracy"]), 4)
    return {"source": str(path), "layer": probe_layer, "tasks": tasks}


def _absorption(task_rows: dict[str, Any], best: dict[str, list[int]], world: Any
                ) -> dict[str, Any] | None:
    """Country latents against city latents on the people's rows (both tasks read the
    same rows: each person's first mention in a document)."""
    if "country" not in task_rows or "city" not in task_rows:
        return None
    (ex_c, codes), (ex_city, _) = task_rows["country"], task_rows["city"]
    if not np.array_equal(ex_c.rows, ex_city.rows):
        return None
    rows = absorption(codes, ex_c.y, ex_city.y, best["country"], best["city"])
    names = ex_c.classes
    for r in rows:
        r["value"] = names[r["value"]]
    return {"general": "country", "specific": "city", "values": rows,
            "mean_absorbed": round(float(np.mean([r["absorbed"] for r in rows])), 4),
            "mean_missed": round(float(np.mean([r["missed"] for r in rows])), 4)}


def _exposure(task_rows: dict[str, Any], best: dict[str, list[int]], world: Any
              ) -> list[dict[str, Any]]:
    """Per person: how often their city's best latent fires at their mentions."""
    from workbench.world.facts import exposure_bucket

    if "city" not in task_rows:
        return []
    ex, codes = task_rows["city"]
    out = []
    columns: dict[int, np.ndarray] = {}
    for person in np.unique(ex.groups):
        rows = np.nonzero(ex.groups == person)[0]
        city = int(ex.y[rows[0]])
        j = best["city"][city]
        if j not in columns:
            columns[j] = codes.active(j)
        p = world.people[int(person)]
        out.append({"person": p.name, "city": ex.classes[city], "n": int(len(rows)),
                    "recall": round(float(columns[j][rows].mean()), 4),
                    "exposure": round(float(p.exposure), 4),
                    "bucket": exposure_bucket(p.standing)})
    return out


def bars(report: Report) -> dict[str, Any]:
    """Issue 40's bars on this report (None where the report lacks the task)."""
    t, r = report["tasks"], report["reconstruction"]

    def mean_of(names: tuple[str, ...]) -> float | None:
        got = [t[n]["mean_f1"] for n in names if n in t and t[n]["mean_f1"] is not None]
        return round(float(np.mean(got)), 4) if got else None

    values = [v for task in t.values() for v in task["values"] if v["neuron"]]
    beats = (float(np.mean([v["latent"]["f1"] > v["neuron"]["f1"] for v in values]))
             if values else None)
    pos, nc = mean_of(("pos",)), mean_of(("agreement", "category"))
    return {
        "l0": {"value": r["l0"], "bar": BARS["l0_max"], "met": r["l0"] <= BARS["l0_max"]},
        "ce_recovered": {"value": r["ce_recovered"], "bar": BARS["ce_recovered"],
                         "met": r["ce_recovered"] >= BARS["ce_recovered"]},
        "pos_f1": {"value": pos, "bar": BARS["pos_f1"],
                   "met": None if pos is None else pos >= BARS["pos_f1"]},
        "number_category_f1": {"value": nc, "bar": BARS["number_category_f1"],
                               "met": None if nc is None else nc >= BARS["number_category_f1"]},
        "beats_neuron_share": {"value": None if beats is None else round(beats, 4),
                               "bar": BARS["beats_neuron_share"],
                               "met": None if beats is None else beats >= BARS[
                                   "beats_neuron_share"]},
    }


def _text(report: Report) -> str:
    r = report["reconstruction"]
    lines = [f"{report['dictionary']['arch']} dictionary, {report['dictionary']['d_sae']} "
             f"latents at {report['hook']}: L0 {r['l0']:.1f}, FVU {r['fvu']:.3f}, "
             f"CE recovered {r['ce_recovered']:.3f} (clean {r['ce_clean']:.3f}, spliced "
             f"{r['ce_spliced']:.3f}, zero {r['ce_zero']:.3f}), dead {r['dead']}, dense "
             f"{r['dense']}",
             f"{'task':<10} {'values':>6} {'latent F1':>9} {'F1>=0.8':>7} {'neuron':>6} "
             f"{'resid':>6} {'beats':>6} {'probe':>6}"]
    for name, t in report["tasks"].items():
        probe = "-" if t["probe_accuracy"] is None else f"{t['probe_accuracy']:.3f}"
        lines.append(f"{name:<10} {len(t['values']):>6} {t['mean_f1']:>9.3f} "
                     f"{t['share_f1_08']:>7.2f} {t['mean_neuron_f1']:>6.3f} "
                     f"{t['mean_residual_f1']:>6.3f} {t['beats_neuron']:>6.2f} {probe:>6}")
    ab = report.get("absorption")
    if ab:
        lines.append(f"absorption: country latents silent on {ab['mean_missed']:.2f} of their "
                     f"people's mentions, with the city latent firing instead on "
                     f"{ab['mean_absorbed']:.2f}")
    unmet = [k for k, b in report["bars"].items() if b["met"] is False]
    lines.append("bars: all met" if not unmet else "bars not met: " + ", ".join(unmet))
    return "\n".join(lines)


def from_ref(ref: str | Path | ModelRef, cfg: Config | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True) -> Report:
    """Load the model `ref` and its corpus, then evaluate `cfg.sae` on them."""
    from workbench.models.refs import ModelRef

    ref = ModelRef.of(ref)
    loaded = ref.load_corpus(corpus, required="a world corpus encoded with the model's "
                             "tokenizer")
    torch.manual_seed((cfg or Config()).seed)
    return run(ref.load(device), loaded, cfg, ref=ref, progress=progress)


def summary(report: Report) -> str:
    """What `workbench sae eval` prints."""
    return report["summary"]["text"]
