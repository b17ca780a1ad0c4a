"""Belief tests end to end (`workbench beliefs`): elicit, trace, pressure, edit, measure.

`run` picks `n` beliefs, reads what the model states about them, traces where the
model recalls them (causal tracing averaged over facts, by token role), runs the in-context
pressure ladder, and edits each fact with ROME and constrained fine-tuning at the traced layer
(or a given one), re-running the edited model for every metric of `beliefs.metrics`.
Every belief carries what the world planted about it (exposure, bucket, training mentions)
and its strength (margin); `report["strength"]` holds the rank correlations of exposure,
strength and flip level and every result split by exposure bucket (`beliefs.strength`).
Report schema `workbench.beliefs/1`; figures by `beliefs.figures`. The analysis has the
shape of every other (`workbench.analysis`):

    from beliefs import suite
    report = suite.run(model, corpus, suite.Config(n=20))   # the corpus's world facts
    report = suite.from_ref("runs/demo", suite.Config(n=20))
    write_report(report, report_path("runs/demo", suite.KIND), suite.FIGURES)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from beliefs.editing import Edit, WeightEdit, check_layer, context_prefixes, key_covariances
from beliefs.elicit import elicit, object_ids
from beliefs.factbase import Belief, FactBase, load_facts, world_facts
from beliefs.figures import FIGURES as FIGURES
from beliefs.finetune import FinetuneConfig, finetune_edit
from beliefs.ladder import LadderConfig, ladder, summarize_ladder
from beliefs.latent import LatentConfig, SubjectCodes, calibrate_latents, latent_edit
from beliefs.memit import LayerEdits, MemitConfig, Request, memit_edit
from beliefs.metrics import EditEvalConfig, EditEvaluator, aggregate
from beliefs.regimes import RegimeConfig, batch_regime, layer_range, sequential_regime
from beliefs.rome import RomeConfig, rome_edit, templates
from beliefs.steering import SteerConfig, calibrate, steer_edit
from beliefs.strength import strength_report
from beliefs.summary import summary as summary
from beliefs.trace import ROLES as ROLES
from beliefs.trace import load_probe_report, probe_comparison, trace_summary
from circuits.tracing import TraceConfig
from workbench.analysis import Report
from workbench.models.arch import require

if TYPE_CHECKING:
    from torch import Tensor

    from features.dictionary import Dictionary
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import ModelRef
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)
KIND = "beliefs"
SCHEMA = "workbench.beliefs/1"
METHODS = ("icl", "rome", "memit", "ft", "steer", "sae")
# `sae` needs a dictionary of the model
DEFAULT_METHODS = ("icl", "rome", "memit", "ft", "steer")
WEIGHT_METHODS = ("rome", "memit", "ft")  # the methods that edit weights (`edit_belief`)
EDIT_METHODS = ("rome", "memit", "ft", "steer", "sae")  # measured with the edit metrics


@dataclass(frozen=True)
class BeliefsConfig:
    """What `run` runs.

    Args:
        methods: any of `icl` (pressure ladder), `rome`, `memit` (`beliefs.memit`: over
            `memit_layers`), `ft` (constrained fine-tuning),
            `steer` (activation addition where the subject occurs, `beliefs.steering`),
            `sae` (a sparse dictionary's latents clamped where the subject occurs,
            `beliefs.latent`; `run` is given the dictionary).
        n: beliefs tested (spread over subjects and relations).
        seeds: each seed draws other new objects and ROME/FT context prefixes.
        relations: relations to test (None: every direct relation).
        layer: the edited MLP layer; None = the causal-trace peak (MLP at the last subject
            token, averaged over the traced facts).
        n_trace: facts traced for that average (the model states them correctly).
        cov_tokens: corpus tokens for ROME's key covariance.
        cov_split: the corpus split they come from.
        memit_layers: MEMIT's layers (None: `[layer]` when `layer` is given, else
            `beliefs.regimes.layer_range` of the trace).
        regime: the edit regimes (`single`: each fact alone, the method table; `batch` and
            `sequential`: MEMIT on many facts, `beliefs.regimes`).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    n: int = 50
    seeds: tuple[int, ...] = (0,)
    relations: tuple[str, ...] | None = None
    layer: int | None = None
    n_trace: int = 10
    cov_tokens: int = 100_000
    cov_split: str = "train"
    memit_layers: tuple[int, ...] | None = None
    rome: RomeConfig = field(default_factory=RomeConfig)
    memit: MemitConfig = field(default_factory=MemitConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    ft: FinetuneConfig = field(default_factory=FinetuneConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    metrics: EditEvalConfig = field(default_factory=EditEvalConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods={list(self.methods)}; choose from {list(METHODS)}")
        if self.n < 1 or not self.seeds or self.n_trace < 0 or self.cov_tokens < 1:
            raise ValueError(f"n={self.n}, seeds={self.seeds}, n_trace={self.n_trace}, "
                             f"cov_tokens={self.cov_tokens}; pass n >= 1, one seed or more, "
                             "n_trace >= 0, cov_tokens >= 1")


def _single_token(model: Model, belief: Belief) -> bool:
    return len(object_ids(model, belief.object)) == 1


def edit_belief(model: Model, belief: Belief, new: str, method: str, layer: int,
                cov: Tensor | None = None, cfg: BeliefsConfig | None = None, seed: int = 0,
                prefixes: dict[tuple[int, int, int], list[str]] | None = None,
                keep: list[str] | None = None, *, covs: dict[int, Tensor] | None = None,
                memit_layers: list[int] | None = None) -> WeightEdit | LayerEdits:
    """The weight edit that makes `model` state `new` for `belief` (not applied): `rome`
    (needs the layer's key covariance `cov`) or `ft` (constrained fine-tuning) at the MLP of
    `layer`, or `memit` over `memit_layers` (default `[layer]`; `covs`: their covariances),
    from its first prompt, with `cfg`'s settings and `seed`'s context prefixes.
    `prefixes`: context prefixes already sampled from this (unedited) model, by
    `(n_prefixes, prefix_len, seed)`; what is sampled here is added to it (every edit of
    a run shares one sample per seed: ROME's and fine-tuning's are the same texts).
    `keep`: the prompts ROME's retention term holds (`RomeConfig.retain_weight`; default
    none: `run` passes the subject's other relations' prompts, `retention_prompts`)."""
    cfg = cfg or BeliefsConfig()
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method={method!r}; a weight edit is one of {list(WEIGHT_METHODS)}")
    target = object_ids(model, new)
    method_cfg = {"rome": cfg.rome, "memit": cfg.memit.z, "ft": cfg.ft}[method]
    sample = (method_cfg.n_prefixes, method_cfg.prefix_len, seed)
    prefixes = {} if prefixes is None else prefixes
    if sample not in prefixes:
        prefixes[sample] = context_prefixes(model, *sample)
    if method == "rome":
        rome = RomeConfig(**{**asdict(cfg.rome), "seed": seed})
        return rome_edit(model, templates(belief.prompts, rome.n_templates), belief.subject,
                         target, layer, cov, rome, prefixes[sample], keep)
    if method == "memit":
        layers = list(memit_layers or [layer])
        covs = covs if covs is not None else ({layer: cov} if cov is not None else {})
        memit = replace(cfg.memit, z=replace(cfg.memit.z, seed=seed))
        request = Request(templates(belief.prompts, memit.z.n_templates), belief.subject, target,
                          list(keep or []))
        return memit_edit(model, [request], layers, covs, memit, prefixes[sample])
    ft = FinetuneConfig(**{**asdict(cfg.ft), "seed": seed})
    return finetune_edit(model, [belief.prompts[0]], belief.subject, target, layer, ft,
                         prefixes[sample])


RETAIN_TEMPLATES = 3  # training templates per other relation the retention term holds


def retention_prompts(base: FactBase, belief: Belief, per_relation: int = RETAIN_TEMPLATES
                      ) -> list[str]:
    """What the retention term holds while `belief` is edited: the first `per_relation`
    training templates of each of the subject's other direct relations (in the world, its
    three verbs in the plain frame; their held-out paraphrases stay unseen, so the report's
    `kept_paraphrase` measures whether holding these generalises)."""
    return [p for other in base.other_relations(belief) for p in other.prompts[:per_relation]]


def calibration_beliefs(base: FactBase, tested: list[Belief], cfg: BeliefsConfig,
                        n: int | None = None) -> list[Belief]:
    """Up to `n` (default `cfg.steer.n_calibration`) facts of the tested relations that are
    not tested: they choose steering's layer and scale (and the latent clamp's settings), so
    the tested facts stay held out."""
    n = cfg.steer.n_calibration if n is None else n
    seen = {(b.subject, b.relation) for b in tested}
    pool = base.beliefs(list(cfg.relations) if cfg.relations else None, None,
                        cfg.seeds[0] + 1)
    out = [b for b in pool if (b.subject, b.relation) not in seen][:n]
    if not out:
        raise ValueError(f"every fact of the chosen relations is tested (--n {len(tested)}), "
                         "so none is left to choose steering's scale on; test fewer facts")
    return out


_CALIBRATED = {"steer": "steering", "sae": "sae"}  # where a method's own layer is reported


def latent_codes(model: Model, base: FactBase,
                 dictionary: tuple[Dictionary, dict[str, Any]] | None) -> SubjectCodes:
    """The subject codes of `--method sae`'s dictionary, checked: trained on this model
    (weight checksum), reading one of its hooks with the model's width."""
    from features.evaluate import check_model

    if dictionary is None:
        raise ValueError("--method sae needs a sparse dictionary of this model; pass --sae DIR "
                         "(made by `workbench sae train`)")
    d, meta = dictionary
    where = meta.get("path", "the dictionary")
    check_model(meta, model, where)
    hook = meta.get("hook")
    if d.cfg.transcoder or hook not in model.hook_dict or d.cfg.d_in != model.cfg.d_model:
        raise ValueError(f"dictionary {where} reads {hook} ({d.cfg.d_in} wide"
                         f"{', a transcoder' if d.cfg.transcoder else ''}); --method sae clamps "
                         f"an autoencoder of one of this model's hooks {model.cfg.d_model} wide "
                         "(its residual stream); train one with `workbench sae train --hook "
                         "blocks.L.hook_resid_post`")
    device = next(model.parameters()).device
    return SubjectCodes(model, base, d.to(device), hook)


def default_facts(corpus: Corpus | None) -> FactBase:
    """The facts a model is tested on when none are given: the world's facts of a world
    corpus, else the real-fact list that ships with the project (`datasets/facts/`)."""
    if corpus is not None and corpus.kind == "world":
        return world_facts(corpus.world(), corpus.fact_table())
    return load_facts()


def run(model: Model, corpus: Corpus | None = None, cfg: BeliefsConfig | None = None, *,
        facts: FactBase | None = None, ref: str | ModelRef | None = None,
        progress: bool = True, probe_report: Report | None = None,
        dictionary: tuple[Dictionary, dict[str, Any]] | None = None) -> Report:
    """Every belief test of `cfg` on `model` (never mutated: edits are undone exactly).

    Args:
        corpus: a corpus in the model's tokenizer, for ROME's key covariance and the fluency
            loss (ROME needs one).
        facts: the facts tested (default: `default_facts(corpus)`).
        ref: the reference recorded in the report (default: the model's name).
        probe_report: a `workbench.probe/1` report whose fact probes' best layers are set
            beside the causal trace's peak.
        dictionary: the sparse dictionary of `--method sae` and its `workbench.json`
            (`features.io.load_dictionary`), trained on this model.
    """
    cfg = cfg or BeliefsConfig()
    base = facts if facts is not None else default_facts(corpus)
    model_ref = str(ref) if ref is not None else model.cfg.model_name
    weight_methods = [m for m in cfg.methods if m in WEIGHT_METHODS]
    edit_methods = [m for m in cfg.methods if m in EDIT_METHODS]
    if set(cfg.regime.regimes) - {"single"}:
        weight_methods = list(dict.fromkeys([*weight_methods, "memit"]))
    if weight_methods:
        require(model, "mlp_edit", f"--method {','.join(weight_methods)}")
    if corpus is None and {"rome", "memit"} & set(weight_methods):
        raise ValueError("ROME and MEMIT need a corpus for their key covariance; pass --corpus "
                         "DIR (a world corpus or one built with `workbench world build --text`)")
    if cfg.layer is not None:
        check_layer(model, cfg.layer)
    if "sae" in cfg.methods:
        codes = latent_codes(model, base, dictionary)
    beliefs = base.beliefs(list(cfg.relations) if cfg.relations else None, cfg.n, cfg.seeds[0])
    bar = dict(disable=not progress, leave=False)
    stated = [elicit(model, b, generate_tokens=4)
              for b in tqdm(beliefs, desc="elicit", **bar)]
    # what the world planted about each fact (exposure, bucket, mentions) and its strength
    planted = {(b.subject, b.relation): base.exposure_of(b.subject, b.relation)
               | {"margin": e.margin} for b, e in zip(beliefs, stated, strict=True)}
    report: dict[str, Any] = {
        "schema": SCHEMA, "model": model_ref, "facts": base.source, "config": _config(cfg),
        "n_beliefs": len(beliefs),
        "elicit": {
            "accuracy": float(np.mean([e.stated == e.object for e in stated])),
            "consistency": float(np.mean([e.consistency for e in stated])),
            "strength": float(np.mean([e.strength for e in stated])),
            "beliefs": [e.to_dict() | planted[(e.subject, e.relation)] for e in stated],
        },
        "methods": {},
    }
    # causal tracing reads p(object) of one token: facts the model states, one-token objects
    known = [b for b, e in zip(beliefs, stated, strict=True) if e.stated == b.object]
    traceable = [b for b in known if _single_token(model, b)]
    report["untraced_multitoken"] = len(known) - len(traceable)
    traced = traceable[: cfg.n_trace]
    if cfg.n_trace and traced:
        report["trace"] = trace_summary(model, traced, cfg.trace)
        report["trace"]["probes"] = probe_comparison(report["trace"], probe_report)
    elif cfg.layer is None and edit_methods:
        raise ValueError("no layer to edit: the model states none of the chosen facts with a "
                         "one-token object (or n_trace is 0), so there is no causal trace to "
                         "pick one; pass --layer L")
    layer = cfg.layer if cfg.layer is not None else report.get("trace", {}).get("peak_layer")
    report["layer"] = layer
    if "icl" in cfg.methods:
        rows = [ladder(model, base, b, base.new_object(b, seed), cfg.ladder)
                | planted[(b.subject, b.relation)]
                for seed in cfg.seeds for b in tqdm(beliefs, desc="ladder", **bar)]
        report["methods"]["icl"] = summarize_ladder(rows) | {"beliefs": rows}
    regimes = [r for r in cfg.regime.regimes if r != "single"]
    single = edit_methods if "single" in cfg.regime.regimes else []
    if regimes or "memit" in single:
        report["memit_layers"] = (list(cfg.memit_layers) if cfg.memit_layers else
                                  layer_range(report["trace"], model.cfg.n_layers)
                                  if "trace" in report and cfg.layer is None else [layer])
    if single or regimes:
        cov_layers = sorted({*([layer] if "rome" in single else []),
                             *report.get("memit_layers", [])})
        covs = (key_covariances(model, corpus, cov_layers, n_tokens=cfg.cov_tokens,
                                split=cfg.cov_split) if cov_layers else {})
        split = "val" if corpus is not None and "val" in corpus.splits else None
        evaluator = EditEvaluator(model, base, corpus.tokens(split) if split else None,
                                  cfg.metrics)
        prefixes: dict[tuple[int, int, int], list[str]] = {}
    if single:
        rows_by: dict[str, list[dict[str, Any]]] = {m: [] for m in ["unedited", *single]}
        if "steer" in single:
            report["steering"] = calibrate(model, base, calibration_beliefs(
                base, beliefs, cfg), cfg.steer, cfg.seeds[0])
        if "sae" in single:
            report["sae"] = calibrate_latents(model, base, calibration_beliefs(
                base, beliefs, cfg, cfg.latent.n_calibration), codes, cfg.latent, cfg.seeds[0])
            report["sae"]["dictionary"] = dictionary[1].get("path") if dictionary else None
        jobs = [(seed, b) for seed in cfg.seeds for b in beliefs]
        for seed, b in tqdm(jobs, desc="edits", **bar):
            new = base.new_object(b, seed)
            extra = {"seed": seed} | planted[(b.subject, b.relation)]
            rows_by["unedited"].append(evaluator.evaluate(b, new, None) | extra)
            for method in single:
                if method == "steer":
                    at = report["steering"]
                    edit: Edit = steer_edit(model, base, b, new, at["layer"], at["alpha"],
                                            cfg.steer)
                elif method == "sae":
                    at = report["sae"]
                    edit = latent_edit(codes, b, new, at["n_latents"], at["scale"],
                                       at["position"], cfg.latent.max_subjects)
                else:
                    edit = edit_belief(model, b, new, method, layer, covs.get(layer), cfg, seed,
                                       prefixes, retention_prompts(base, b), covs=covs,
                                       memit_layers=report.get("memit_layers"))
                rows_by[method].append(evaluator.evaluate(b, new, edit) | extra)
        for method, rows in rows_by.items():
            at = (report[_CALIBRATED[method]]["layer"] if method in _CALIBRATED else
                  report["memit_layers"] if method == "memit" else layer)
            report["methods"][method] = aggregate(rows) | {"layer": at, "edits": rows}
    if regimes:
        seed = cfg.seeds[0]
        z = replace(cfg.memit.z, seed=seed)
        sample = (z.n_prefixes, z.prefix_len, seed)
        if sample not in prefixes:
            prefixes[sample] = context_prefixes(model, *sample)
        args = (model, base, evaluator, report["memit_layers"], covs, replace(cfg.memit, z=z),
                cfg.regime, seed, prefixes[sample], retention_prompts,
                {key: base.exposure_of(*key) for key in base.facts})
        report["regimes"] = {"relation": cfg.regime.relation, "layers": report["memit_layers"]}
        if "batch" in regimes:
            report["regimes"]["batch"] = batch_regime(*args, progress=progress)
        if "sequential" in regimes:
            report["regimes"]["sequential"] = sequential_regime(*args, progress=progress)
    report["strength"] = strength_report(
        report["elicit"]["beliefs"], report["methods"].get("icl", {}).get("beliefs"),
        {m: r["edits"] for m, r in report["methods"].items() if "edits" in r})
    return report


def _config(cfg: BeliefsConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=list))


def from_ref(ref: str | Path | ModelRef, cfg: BeliefsConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True, facts: str | Path | None = None,
             probes: str | Path | None = None, sae: str | Path | None = None) -> Report:
    """Load the model `ref`, its corpus (`corpus`, else the run's; none for a Hugging Face
    model without one), the facts (a `workbench.facts/1` list, else `default_facts`), the
    probe report (`probes`, else the model's own `probe` report when there is one) and for
    `--method sae` the dictionary (`sae`, else the model's only one, `MODEL/sae/NAME`), then
    `run` the belief tests."""
    from probe.layers import KIND as PROBE_KIND
    from workbench.models.checks import check_tokenizer
    from workbench.models.refs import ModelRef

    ref = ModelRef.of(ref)
    loaded = ref.load_corpus(corpus)
    base = load_facts(facts) if facts else default_facts(loaded)
    own = ref.report_path(PROBE_KIND)
    given = probes is not None
    if probes is None and own.is_file():
        probes = own
    probe_report = load_probe_report(probes, given=given)  # refused before the model loads
    dictionary = load_latent_dictionary(ref, cfg or BeliefsConfig(), sae)
    model = ref.load(device)
    if loaded is not None:
        check_tokenizer(model, loaded)
    return run(model, loaded, cfg, facts=base, ref=ref, progress=progress,
               probe_report=probe_report, dictionary=dictionary)


def load_latent_dictionary(ref: ModelRef, cfg: BeliefsConfig, sae: str | Path | None
                           ) -> tuple[Dictionary, dict[str, Any]] | None:
    """The dictionary of `--method sae` (`sae`, else the model's only one) and its record,
    whose `path` says where it was read; None when the method is not run (and `sae` unset)."""
    from features.io import find_dictionary, load_dictionary

    if "sae" not in cfg.methods:
        if sae is not None:
            raise ValueError(f"--sae {sae} is read only by --method sae; add sae to --method "
                             "or leave out --sae")
        return None
    path = find_dictionary(ref.output_dir, sae, ref.text)
    d, meta = load_dictionary(path)
    return d, meta | {"path": str(path)}


Config = BeliefsConfig
