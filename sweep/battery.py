"""One battery of measurements on one model: every ability a sweep tracks, each as a
discontinuous metric (an accuracy or a share) and a continuous one (a log-probability, a loss
or a score), through the analyses' own Python APIs.

An ability is `{"discrete": Metric, "continuous": Metric, **extra}` where a metric is
`{"name", "value", "chance", "ceiling"}` (what a guessing model and a perfect one score, so
`sweep.emergence` reads progress from chance to ceiling). The abilities (`ABILITIES`):

- `next_token`: top-1 accuracy / mean log-probability of the next token on validation
  windows (`val_loss` beside it is the trainer's validation loss on those windows);
- `facts`, `facts_low|mid|high`, `facts_twohop`: `workbench eval`'s fact recall (top-1 over
  the vocabulary on held-out templates, overall and by exposure bucket; two-hop countries)
  and the answer's log-probability;
- `agreement`: correct verb form above the wrong one / log p(correct | {correct, wrong});
- `fewshot_known|novel|flipped`: `icl.measure` accuracy and log-probability of the right
  answer at the most demonstrations that fit, averaged over the world's tasks of that kind;
- `update`: the pressure ladder (`beliefs.ladder`): share stated the new object by the
  `news` level / mean log p(new) there;
- `induction_copy`: top-1 accuracy / log-probability on the second copy of repeated random
  tokens; `induction_heads` and `prev_token_heads`: a head scoring >= `head_threshold` /
  the best head's score (`circuits.scores.head_scores`);
- `icl`: share of windows whose late-token loss is below the early-token loss / early minus
  late loss in nats (`circuits.dynamics.icl_positions`, Olsson et al. 2022);
- `probe_syntax|semantics|facts`: `probe.layers` probe accuracy at the best layer (chance: the
  majority class) / selectivity there; `center_of_gravity` beside them;
- `rome`: the belief suite's ROME efficacy on a few facts / minus the edit's final NLL of the
  new object; `rome_specificity`: neighbours unchanged / p(own object) > p(new) share.

Inputs that do not depend on the model (fact items, few-shot items, windows, repeated
tokens, the fact base) are built once per world (`WorldInputs`) and shared by its members.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from beliefs.factbase import FactBase
from beliefs.metrics import EditEvalConfig
from beliefs.rome import RomeConfig
from beliefs.suite import BeliefsConfig, default_facts
from beliefs.suite import run as beliefs_run
from circuits.dynamics import icl_losses, icl_positions
from circuits.inputs import repeated_tokens_for
from circuits.scores import head_scores
from icl.measure import IclConfig, select_items, summarize
from icl.measure import score_items as icl_score_items
from probe.fit import ProbeConfig
from probe.layers import LayersConfig
from probe.layers import run as probe_run
from workbench.evaluate import agreement, fact_recall, token_nll
from workbench.prompts import encode_prompt
from workbench.repeats import RepeatedTokens, copy_losses, masked_mean
from workbench.training.batches import eval_windows
from workbench.world.facts import BUCKETS
from workbench.world.fewshot import KS, TASKS

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

PROBE_KINDS = ("syntax", "semantics", "facts")
FEWSHOT_KINDS = ("known", "novel", "flipped")
ABILITIES = ("next_token", "facts", *(f"facts_{b}" for b in BUCKETS), "facts_twohop",
             "agreement", *(f"fewshot_{k}" for k in FEWSHOT_KINDS), "update", "induction_copy",
             "induction_heads", "prev_token_heads", "icl",
             *(f"probe_{k}" for k in PROBE_KINDS), "rome", "rome_specificity")
UPDATE_LEVEL = "news"


@dataclass(frozen=True)
class BatteryConfig:
    """How much of each analysis the battery runs (small by default: it runs on every
    checkpoint of every member).

    Args:
        windows: validation windows for the next-token, loss and ICL numbers.
        fact_items: fact-recall items per set (held-out, two-hop).
        agreement_items: agreement items.
        fewshot_items: few-shot items per task and k.
        repeat_seqs: repeated-random-token sequences for the induction numbers.
        head_threshold: a head with at least this induction (previous-token) score counts.
        ladder_facts: facts the pressure ladder tests.
        probe_examples: rows per probe task; probe_l2 and probe_iter: one L2 strength (no
            grid) and L-BFGS iterations of each linear probe; probe_folds, probe_boot and
            probe_min_per_class as `probe.layers`'s folds, n_boot and min_per_class;
            probe_split and probe_tokens: the text probed (the first tokens of the split;
            a small world's validation split is too short for every class).
        rome_facts: facts ROME edits (0: no ROME); rome_steps: its optimisation steps;
            rome_cov_tokens: tokens of its key covariance.
        skip: abilities not measured (names of `ABILITIES`; probes and ROME are the slow ones).
        seed: every sampled input.
    """

    windows: int = 16
    fact_items: int = 64
    agreement_items: int = 64
    fewshot_items: int = 8
    repeat_seqs: int = 16
    head_threshold: float = 0.4
    ladder_facts: int = 4
    probe_examples: int = 300
    probe_l2: float = 1e-3
    probe_iter: int = 50
    probe_folds: int = 3
    probe_boot: int = 20
    probe_min_per_class: int = 2
    probe_split: str = "train"
    probe_tokens: int = 20_000
    rome_facts: int = 2
    rome_steps: int = 10
    rome_cov_tokens: int = 4000
    skip: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("windows", "fact_items", "agreement_items", "fewshot_items",
                     "repeat_seqs", "probe_examples", "probe_boot", "probe_min_per_class",
                     "rome_steps",
                     "rome_cov_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatteryConfig.{name}={getattr(self, name)}; pass >= 1")
        if self.ladder_facts < 0 or self.rome_facts < 0 or self.probe_folds < 3:
            raise ValueError(f"BatteryConfig ladder_facts={self.ladder_facts}, rome_facts="
                             f"{self.rome_facts}, probe_folds={self.probe_folds}; pass "
                             "ladder_facts >= 0, rome_facts >= 0, probe_folds >= 3")
        bad = [s for s in self.skip if s not in ABILITIES + ("probes",)]
        if bad:
            raise ValueError(f"BatteryConfig.skip={list(self.skip)}: unknown {bad}; choose "
                             f"from {', '.join(ABILITIES)} or 'probes'")

    def wants(self, name: str) -> bool:
        return name not in self.skip


def metric(name: str, value: float | None, chance: float, ceiling: float) -> dict[str, Any]:
    """One metric of an ability (None/nan value: not measured)."""
    v = None if value is None or not math.isfinite(float(value)) else float(value)
    return {"name": name, "value": v, "chance": float(chance), "ceiling": float(ceiling)}


def ability(discrete: dict[str, Any], continuous: dict[str, Any], **extra: Any
            ) -> dict[str, Any]:
    return {"discrete": discrete, "continuous": continuous, **extra}


@dataclass
class WorldInputs:
    """What the battery feeds every member of one world (built once, kept in memory)."""

    corpus: Corpus
    n_ctx: int
    windows: torch.Tensor
    targets: torch.Tensor
    facts: list[dict[str, Any]]
    twohop: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    fewshot: list[dict[str, Any]]
    fewshot_cfg: IclConfig | None
    repeated: RepeatedTokens
    base: FactBase
    notes: dict[str, str] = field(default_factory=dict)


def _fewshot(model: Model, corpus: Corpus, cfg: BatteryConfig
             ) -> tuple[list[dict[str, Any]], IclConfig | None, str]:
    """The world's few-shot tasks (whatever it has), at k = 0 and the most demonstrations
    whose prompts fit the model's context."""
    files = corpus.manifest.get("files", {}).get("eval", {})
    if "fewshot" not in files:
        return [], None, "the corpus has no few-shot items"
    present = {it["task"] for it in corpus.eval_items("fewshot")}
    tasks = tuple(t for t in TASKS if t in present)
    for k in sorted((k for k in KS if k > 0), reverse=True):
        icl = IclConfig(tasks=tasks, ks=(0, k), n=cfg.fewshot_items, mechanism=False)
        items = select_items(corpus, icl)
        longest = max(len(encode_prompt(model, it["prefix"])) for it in items)
        if longest + 4 <= model.cfg.n_ctx:
            return items, icl, ""
    return [], None, f"no few-shot prompt with k >= 1 fits n_ctx={model.cfg.n_ctx}"


def world_inputs(model: Model, corpus: Corpus, cfg: BatteryConfig) -> WorldInputs:
    """Everything the battery reads that does not depend on the weights (`model` lends only
    its tokenizer and context length)."""
    x, y = eval_windows(corpus.tokens("val"), model.cfg.n_ctx, cfg.windows)
    items, icl, note = _fewshot(model, corpus, cfg)
    out = WorldInputs(
        corpus=corpus, n_ctx=model.cfg.n_ctx, windows=x, targets=y,
        facts=corpus.eval_items("facts_heldout")[: cfg.fact_items],
        twohop=corpus.eval_items("facts_twohop")[: cfg.fact_items],
        agreement=corpus.eval_items("agreement")[: cfg.agreement_items],
        fewshot=items, fewshot_cfg=icl,
        repeated=repeated_tokens_for(model, cfg.repeat_seqs, seed=cfg.seed),
        base=default_facts(corpus))
    if note:
        out.notes["fewshot"] = note
    return out


@torch.no_grad()
def _windows(model: Model, inp: WorldInputs) -> dict[str, Any]:
    device = next(model.parameters()).device
    logits = model(inp.windows.to(device)).float().cpu()  # (B, T, V)
    logp = F.log_softmax(logits, -1)
    tgt_logp = logp.gather(-1, inp.targets[..., None])[..., 0]  # (B, T)
    nll = -tgt_logp
    acc = (logits.argmax(-1) == inp.targets).float()
    v = model.cfg.d_vocab
    early, late = icl_positions(inp.windows.shape[1])
    lo, hi = (span.mean(1) for span in icl_losses(token_nll(logits, inp.windows)))  # (B,)
    return {
        "val_loss": float(nll.mean()),
        "next_token": ability(metric("accuracy", float(acc.mean()), 1 / v, 1.0),
                              metric("log-probability", float(tgt_logp.mean()), -math.log(v),
                                     0.0)),
        "icl": ability(metric("share of windows late loss < early loss",
                              float((hi < lo).float().mean()), 0.5, 1.0),
                       metric("early minus late loss (nats)", float((lo - hi).mean()), 0.0,
                              float(lo.mean())),
                       icl_score=float((hi - lo).mean()), early=early, late=late),
    }


def _answers(model: Model, items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 hits over the vocabulary and the answer's log-probability per item
    (`workbench.evaluate.fact_recall`'s top-1)."""
    per_item = fact_recall(model, items, per_item=True)["per_item"]
    return per_item["top1"].numpy(), per_item["logprob"].numpy()


def _facts(model: Model, inp: WorldInputs) -> dict[str, Any]:
    v = model.cfg.d_vocab
    out: dict[str, Any] = {}

    def put(name: str, hit: np.ndarray, lp: np.ndarray) -> None:
        n = len(hit)
        out[name] = ability(metric("top-1 accuracy", float(hit.mean()) if n else None, 1 / v,
                                   1.0),
                            metric("log-probability", float(lp.mean()) if n else None,
                                   -math.log(v), 0.0), n=n)

    if inp.facts:
        hit, lp = _answers(model, inp.facts)
        put("facts", hit, lp)
        buckets = np.array([str(it.get("bucket")) for it in inp.facts])
        for b in BUCKETS:
            put(f"facts_{b}", hit[buckets == b], lp[buckets == b])
    if inp.twohop:
        put("facts_twohop", *_answers(model, inp.twohop))
    return out


def _agreement(model: Model, inp: WorldInputs) -> dict[str, Any]:
    if not inp.agreement:
        return {}
    per_item = agreement(model, inp.agreement, per_item=True)["per_item"]
    return {"agreement": ability(
        metric("accuracy", float(per_item["correct"].mean()), 0.5, 1.0),
        metric("log p(correct | correct, wrong)", float(per_item["logprob"].mean()),
               math.log(0.5), 0.0), n=len(inp.agreement))}


def _fewshot_abilities(model: Model, inp: WorldInputs) -> dict[str, Any]:
    if inp.fewshot_cfg is None:
        return {}
    icl = inp.fewshot_cfg
    tasks = summarize(icl_score_items(model, inp.fewshot, icl.batch_size), icl.tasks, icl.ks)
    hi = str(max(icl.ks))
    v = model.cfg.d_vocab
    out: dict[str, Any] = {}
    for kind in FEWSHOT_KINDS:
        sel = [t for t in tasks.values() if t["kind"] == kind]
        if not sel:
            continue
        out[f"fewshot_{kind}"] = ability(
            metric("accuracy", float(np.mean([t["k"][hi]["accuracy"] for t in sel])),
                   float(np.mean([t["chance"] for t in sel])), 1.0),
            metric("log-probability", float(np.mean([t["k"][hi]["logprob"] for t in sel])),
                   -math.log(v), 0.0),
            k=int(hi), tasks=[n for n, t in tasks.items() if t["kind"] == kind],
            accuracy_k0=float(np.mean([t["k"]["0"]["accuracy"] for t in sel])))
    return out


@torch.no_grad()
def _induction(model: Model, inp: WorldInputs, cfg: BatteryConfig) -> dict[str, Any]:
    rep = inp.repeated
    device = next(model.parameters()).device
    logits = model(rep.tokens.to(device)).float().cpu()  # (B, T, V)
    mask = rep.second_copy_mask()  # positions an induction head can predict
    hit = masked_mean((logits[:, :-1].argmax(-1) == rep.tokens[:, 1:]).float(), mask[:, 1:])
    loss = copy_losses(token_nll(logits, rep.tokens), rep)["second"]
    v = model.cfg.d_vocab
    scores = head_scores(model, rep, kinds=("induction", "prev_token"))
    out = {"induction_copy": ability(
        metric("top-1 accuracy", hit, 1 / v, 1.0),
        metric("log-probability", -loss, -math.log(v), 0.0))}
    for kind in ("induction", "prev_token"):
        grid = scores[kind]
        best, at = float(grid.max()), int(grid.argmax())
        out[f"{kind}_heads"] = ability(
            metric(f"a head scores >= {cfg.head_threshold}", float(best >= cfg.head_threshold),
                   0.0, 1.0),
            metric(f"best head's {kind} score", best, 0.0, 1.0),
            best_head=f"L{at // grid.shape[1]}H{at % grid.shape[1]}")
    return out


def _probes(model: Model, inp: WorldInputs, cfg: BatteryConfig) -> dict[str, Any]:
    # one solver at every width of a sweep (by default, probes of 512+ features are
    # preconditioned: another stopping point at weak L2)
    pcfg = LayersConfig(probe=ProbeConfig(l2=cfg.probe_l2, max_iter=cfg.probe_iter,
                                         precondition=False),
                       max_examples=cfg.probe_examples, folds=cfg.probe_folds,
                       n_boot=cfg.probe_boot, min_per_class=cfg.probe_min_per_class,
                       split=cfg.probe_split, max_tokens=cfg.probe_tokens, seed=cfg.seed)
    try:
        report = probe_run(model, inp.corpus, pcfg, ref="", progress=False)
    except ValueError as exc:  # the world's validation split is too small for a task
        inp.notes["probes"] = str(exc)
        return {}
    out: dict[str, Any] = {}
    for kind in PROBE_KINDS:
        tasks = [t for t in report["tasks"].values() if t["kind"] == kind]
        if not tasks:
            continue
        out[f"probe_{kind}"] = ability(
            metric("probe accuracy at the best layer",
                   float(np.mean([t["best_accuracy"] for t in tasks])),
                   float(np.mean([t["majority_baseline"] for t in tasks])), 1.0),
            metric("selectivity at the best layer",
                   float(np.mean([t["selectivity_at_best"] for t in tasks])), 0.0, 1.0),
            center_of_gravity=float(np.mean([t["center_of_gravity"] for t in tasks])),
            tasks=[n for n, t in report["tasks"].items() if t["kind"] == kind])
    return out


def _beliefs(model: Model, inp: WorldInputs, cfg: BatteryConfig) -> dict[str, Any]:
    methods = tuple(m for m, want in (("icl", cfg.ladder_facts and cfg.wants("update")),
                                      ("rome", cfg.rome_facts and cfg.wants("rome")))
                    if want)
    if not methods:
        return {}
    n = max(cfg.ladder_facts if "icl" in methods else 0,
            cfg.rome_facts if "rome" in methods else 0)
    bcfg = BeliefsConfig(methods=methods, n=n, n_trace=0, layer=0,
                         cov_tokens=cfg.rome_cov_tokens, cov_split="val",
                         rome=RomeConfig(steps=cfg.rome_steps, n_prefixes=2),
                         metrics=EditEvalConfig(n_neighbours=3, fluency_windows=0))
    report = beliefs_run(model, inp.corpus, bcfg, facts=inp.base, ref="", progress=False)
    out: dict[str, Any] = {}
    if "icl" in methods:
        rows = report["methods"]["icl"]["beliefs"]
        n_cand = float(np.mean([len(inp.base.relation(r["relation"]).candidates)
                                for r in rows]))
        lv = rows and [r["levels"][UPDATE_LEVEL]["p_new"] for r in rows]
        lps = [math.log(max(p, 1e-30)) for p in lv if p is not None]
        out["update"] = ability(
            metric(f"stated the new object by the {UPDATE_LEVEL} level",
                   report["methods"]["icl"]["flipped_by"][UPDATE_LEVEL], 1 / n_cand, 1.0),
            metric(f"log p(new) at the {UPDATE_LEVEL} level",
                   float(np.mean(lps)) if lps else None, -math.log(n_cand), 0.0),
            n=len(rows), flipped_by=report["methods"]["icl"]["flipped_by"])
    if "rome" in methods:
        rome = report["methods"]["rome"]
        edits = rome["edits"][: cfg.rome_facts]
        nll = [e["edit"].get("final_nll") for e in edits if e["edit"].get("final_nll")
               is not None]
        v = model.cfg.d_vocab
        out["rome"] = ability(
            metric("efficacy", float(np.mean([e["efficacy"] for e in edits])), 0.0, 1.0),
            metric("log p(new) in the edit contexts", -float(np.mean(nll)) if nll else None,
                   -math.log(v), 0.0),
            n=len(edits), layer=report.get("layer"))
        spec = [e["specificity"] for e in edits if e["specificity"] is not None]
        soft = [e["neighbourhood"] for e in edits if e["neighbourhood"] is not None]
        out["rome_specificity"] = ability(
            metric("neighbours' answers unchanged", float(np.mean(spec)) if spec else None,
                   0.0, 1.0),
            metric("neighbours keep p(own) > p(new)", float(np.mean(soft)) if soft else None,
                   0.0, 1.0), n=len(edits))
    return out


def run_battery(model: Model, inp: WorldInputs, cfg: BatteryConfig = BatteryConfig()
                ) -> dict[str, Any]:
    """Every ability of `ABILITIES` not in `cfg.skip` on one loaded model.

    Returns:
        `{"val_loss", "abilities": {name: {"discrete", "continuous", ...}}, "notes"}`.
    """
    torch.manual_seed(cfg.seed)
    win = _windows(model, inp)
    abilities: dict[str, Any] = {"next_token": win["next_token"], "icl": win["icl"]}
    abilities |= _facts(model, inp) | _agreement(model, inp) | _fewshot_abilities(model, inp)
    abilities |= _induction(model, inp, cfg)
    if cfg.wants("probes"):
        abilities |= _probes(model, inp, cfg)
    abilities |= _beliefs(model, inp, cfg)
    kept = {k: abilities[k] for k in ABILITIES if k in abilities and cfg.wants(k)}
    return {"val_loss": win["val_loss"], "abilities": kept, "notes": dict(inp.notes)}


def config_record(cfg: BatteryConfig) -> dict[str, Any]:
    return {**asdict(cfg), "skip": list(cfg.skip)}
