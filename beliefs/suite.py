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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from beliefs.editing import Edit, WeightEdit, check_layer, context_prefixes, key_covariance
from beliefs.elicit import elicit, object_ids
from beliefs.factbase import Belief, FactBase, load_facts, world_facts
from beliefs.figures import FIGURES as FIGURES
from beliefs.finetune import FinetuneConfig, finetune_edit
from beliefs.ladder import LadderConfig, ladder, summarize_ladder
from beliefs.latent import LatentConfig, SubjectCodes, calibrate_latents, latent_edit
from beliefs.metrics import EditEvalConfig, EditEvaluator, aggregate
from beliefs.rome import RomeConfig, rome_edit
from beliefs.steering import SteerConfig, calibrate, steer_edit
from beliefs.strength import strength_report
from beliefs.summary import summary as summary
from circuits.tracing import TraceConfig, causal_trace
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
METHODS = ("icl", "rome", "ft", "steer", "sae")
DEFAULT_METHODS = ("icl", "rome", "ft", "steer")  # `sae` needs a dictionary of the model
WEIGHT_METHODS = ("rome", "ft")  # the methods that edit weights (`edit_belief`)
EDIT_METHODS = ("rome", "ft", "steer", "sae")  # those measured with the edit metrics
ROLES = ("subject_first", "subject_middle", "subject_last", "after_subject", "last_token")


@dataclass(frozen=True)
class BeliefsConfig:
    """What `run` runs.

    Args:
        methods: any of `icl` (pressure ladder), `rome`, `ft` (constrained fine-tuning),
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
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    n: int = 50
    seeds: tuple[int, ...] = (0,)
    relations: tuple[str, ...] | None = None
    layer: int | None = None
    n_trace: int = 10
    cov_tokens: int = 100_000
    cov_split: str = "train"
    rome: RomeConfig = field(default_factory=RomeConfig)
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


def trace_summary(model: Model, beliefs: list[Belief], cfg: TraceConfig) -> dict[str, Any]:
    """Causal traces of `beliefs` on their edit prompt, averaged by token role.

    Returns the per-role indirect effect `[kind][layer][role]`, the MLP peak layer at the
    last subject token (the last layer excluded: it cannot act on later tokens), and the first
    trace in full (for the heatmap)."""
    if not beliefs:
        raise ValueError("no belief to trace: the model states none of the chosen facts "
                         "correctly; pass --layer to edit anyway")
    per_role: dict[str, list[np.ndarray]] = {}
    first = None
    for b in beliefs:
        result = causal_trace(model, b.prompts[0], b.subject, b.object, cfg)
        first = first or result
        start, end = result.subject
        n_pos = len(result.tokens)
        cols = {"subject_first": [start], "subject_middle": list(range(start + 1, end - 1)),
                "subject_last": [end - 1], "after_subject": list(range(end, n_pos - 1)),
                "last_token": [n_pos - 1]}
        for kind in result.scores:
            effect = result.indirect_effect(kind)
            roles = [effect[:, c].mean(1) if c else np.full(len(effect), np.nan)
                     for c in cols.values()]
            per_role.setdefault(kind, []).append(np.stack(roles, 1))
    with warnings.catch_warnings():  # a role no prompt has (one-token subjects) stays nan
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: np.nanmean(np.stack(v), 0) for k, v in per_role.items()}
    mlp = mean.get("mlp", next(iter(mean.values())))
    # the last layer's MLP at the subject cannot reach the prediction at a later token
    editable = mlp[: max(1, len(mlp) - 1), ROLES.index("subject_last")]
    peak = int(np.nanargmax(editable))
    last = int(np.nanargmax(mean.get("resid", mlp)[:, ROLES.index("last_token")]))
    return {
        "n": len(beliefs),
        "facts": [f"{b.subject} | {b.relation} | {b.object}" for b in beliefs],
        "roles": list(ROLES),
        "indirect_effect": {k: np.where(np.isnan(v), None, v).tolist() for k, v in mean.items()},
        "peak_layer": peak,
        "peak_kind": "mlp" if "mlp" in mean else next(iter(mean)),
        "resid_last_token_peak_layer": last,
        "example": first.to_dict(),
    }


def probe_comparison(trace: dict[str, Any], probe_report: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """The trace's peak layer next to the fact probes' best layers. A probe's layer `l` is the
    residual stream after block `l - 1`, so an MLP peak at block `p` writes into probe layer
    `p + 1`."""
    out: dict[str, Any] = {"trace_peak_layer": trace["peak_layer"],
                           "trace_peak_probe_layer": trace["peak_layer"] + 1}
    if probe_report is None:
        out["note"] = "no probe report: run `workbench probe --tasks facts` and pass --probes"
        return out
    facts = {t: r for t, r in probe_report.get("tasks", {}).items() if r.get("kind") == "facts"}
    out["probe_best_layers"] = {t: r["best_layer"] for t, r in facts.items()}
    out["probe_best_selectivity"] = {
        t: next(x["selectivity"] for x in r["layers"] if x["layer"] == r["best_layer"])
        for t, r in facts.items()
    }
    return out


def edit_belief(model: Model, belief: Belief, new: str, method: str, layer: int,
                cov: Tensor | None = None, cfg: BeliefsConfig | None = None, seed: int = 0,
                prefixes: dict[tuple[int, int, int], list[str]] | None = None) -> WeightEdit:
    """The weight edit that makes `model` state `new` for `belief` (not applied): `rome`
    (needs the layer's key covariance `cov`) or `ft` (constrained fine-tuning) at the MLP of
    `layer`, from its first prompt, with `cfg`'s settings and `seed`'s context prefixes.
    `prefixes`: context prefixes already sampled from this (unedited) model, by
    `(n_prefixes, prefix_len, seed)`; what is sampled here is added to it (every edit of
    a run shares one sample per seed: ROME's and fine-tuning's are the same texts)."""
    cfg = cfg or BeliefsConfig()
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method={method!r}; a weight edit is one of {list(WEIGHT_METHODS)}")
    target = object_ids(model, new)
    method_cfg = cfg.rome if method == "rome" else cfg.ft
    sample = (method_cfg.n_prefixes, method_cfg.prefix_len, seed)
    prefixes = {} if prefixes is None else prefixes
    if sample not in prefixes:
        prefixes[sample] = context_prefixes(model, *sample)
    if method == "rome":
        rome = RomeConfig(**{**asdict(cfg.rome), "seed": seed})
        return rome_edit(model, [belief.prompts[0]], belief.subject, target, layer, cov, rome,
                         prefixes[sample])
    ft = FinetuneConfig(**{**asdict(cfg.ft), "seed": seed})
    return finetune_edit(model, [belief.prompts[0]], belief.subject, target, layer, ft,
                         prefixes[sample])


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
    if weight_methods:
        require(model, "mlp_edit", f"--method {','.join(weight_methods)}")
    if weight_methods and corpus is None and "rome" in weight_methods:
        raise ValueError("ROME needs a corpus for its key covariance; pass --corpus DIR "
                         "(a world corpus or one built with `workbench world build --text`)")
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
    if edit_methods:
        cov = (key_covariance(model, corpus, layer, n_tokens=cfg.cov_tokens,
                              split=cfg.cov_split, progress=progress)
               if "rome" in weight_methods else None)
        split = "val" if corpus is not None and "val" in corpus.splits else None
        evaluator = EditEvaluator(model, base, corpus.tokens(split) if split else None,
                                  cfg.metrics)
        rows_by: dict[str, list[dict[str, Any]]] = {m: [] for m in ["unedited", *edit_methods]}
        if "steer" in edit_methods:
            report["steering"] = calibrate(model, base, calibration_beliefs(
                base, beliefs, cfg), cfg.steer, cfg.seeds[0])
        if "sae" in edit_methods:
            report["sae"] = calibrate_latents(model, base, calibration_beliefs(
                base, beliefs, cfg, cfg.latent.n_calibration), codes, cfg.latent, cfg.seeds[0])
            report["sae"]["dictionary"] = dictionary[1].get("path") if dictionary else None
        jobs = [(seed, b) for seed in cfg.seeds for b in beliefs]
        prefixes: dict[tuple[int, int, int], list[str]] = {}
        for seed, b in tqdm(jobs, desc="edits", **bar):
            new = base.new_object(b, seed)
            extra = {"seed": seed} | planted[(b.subject, b.relation)]
            rows_by["unedited"].append(evaluator.evaluate(b, new, None) | extra)
            for method in edit_methods:
                if method == "steer":
                    at = report["steering"]
                    edit: Edit = steer_edit(model, base, b, new, at["layer"], at["alpha"],
                                            cfg.steer)
                elif method == "sae":
                    at = report["sae"]
                    edit = latent_edit(codes, b, new, at["n_latents"], at["scale"],
                                       at["position"], cfg.latent.max_subjects)
                else:
                    edit = edit_belief(model, b, new, method, layer, cov, cfg, seed, prefixes)
                rows_by[method].append(evaluator.evaluate(b, new, edit) | extra)
        for method, rows in rows_by.items():
            at = report[_CALIBRATED[method]]["layer"] if method in _CALIBRATED else layer
            report["methods"][method] = aggregate(rows) | {"layer": at, "edits": rows}
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


def load_probe_report(path: str | Path | None, *, given: bool = True
                      ) -> dict[str, Any] | None:
    """The probe report at `path` (None: none), checked. `given`: the user passed it as
    `--probes` (else it is the model's own report, found beside it): the fixes differ."""
    if path is None:
        return None
    path = Path(path)
    other = ("leave out --probes" if given else
             f"move {path} away (the model's own probe report, read when --probes is not "
             "given)")
    if not path.is_file():
        raise FileNotFoundError(f"probe report {path} does not exist; run `workbench probe "
                                f"--tasks facts --out {path}` or {other}")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"probe report {path} is not valid JSON ({exc}); run `workbench "
                         f"probe --overwrite` again or {other}") from exc
    from probe.layers import SCHEMA as PROBE_SCHEMA

    if not isinstance(report, dict) or report.get("schema") != PROBE_SCHEMA:
        raise ValueError(f"{path} is not a probe report (schema workbench.probe/1); pass the "
                         f"report `workbench probe` wrote, or {other}")
    tasks = report.get("tasks")
    sound = isinstance(tasks, dict) and all(
        isinstance(t, dict) and (t.get("kind") != "facts" or (
            isinstance(t.get("best_layer"), int) and isinstance(t.get("layers"), list)
            and any(isinstance(x, dict) and x.get("layer") == t["best_layer"]
                    and isinstance(x.get("selectivity"), (int, float)) for x in t["layers"])))
        for t in tasks.values())
    if not sound:
        raise ValueError(f"probe report {path} is damaged (its tasks lack their layers and "
                         f"best layer); run `workbench probe --overwrite` again or {other}")
    return report


Config = BeliefsConfig
