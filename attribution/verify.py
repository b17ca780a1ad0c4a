"""Attribution checked by retraining (`workbench attribute verify`): remove the documents a
method blames for some facts, train again with the same recipe and seed, and see whether the
facts weaken.

From an attribution report (`workbench attribute`, on a run of ours) the check plans a sweep
(`sweep.spec`, run on the sweep engine's executors) with one member per condition and
training seed, all with the run's model and training recipe on the run's own corpus:

- `none`: the whole corpus (the baseline each condition is compared with);
- one condition per method of the report (`ekfac`, `bm25`, ...): the union over the facts of
  each fact's top `k` documents by that method (`[drop.NAME] docs = [...]`);
- `random`: as many documents as the largest of those unions, drawn uniformly (seeded);
- `mentions`: every training document stating any of the facts (the control that the setup
  can make a fact unknown).

Each member's final checkpoint is then asked every fact on its held-out prompts: the margin
(log-probability of the true object minus the best other object of the relation) and
accuracy (the true object ranked first among them; chance is one over the objects). The
report (`workbench.attribute_verify/1`, `PLAN/verify.json`) gives per seed and condition the
facts' margins and their mean change from `none`, and the verdicts of the issue's bar: each
method's drop against BM25's and against random's (the ratio), and whether removing every
mention leaves the facts at chance.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.models.checkpoints import write_json_atomic

if TYPE_CHECKING:
    from sweep.plan import Plan
    from sweep.spec import SweepSpec
    from workbench.models import Model
    from workbench.world.loader import Corpus

SCHEMA = "workbench.attribute_verify/1"
REPORT_FILE = "verify.json"
NONE, RANDOM, MENTIONS = "none", "random", "mentions"
BASELINES = ("retrain", "run")


def check_seeds(seeds: tuple[int, ...] | None) -> None:
    """`--seeds`: absent, or distinct training seeds.

    Raises:
        ValueError: empty or repeated.
    """
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ValueError(f"--seeds {list(seeds)}; pass distinct training seeds")


@dataclass(frozen=True)
class VerifyConfig:
    """What the retraining check removes.

    Args:
        k: documents removed per fact and method (each fact's top k).
        seeds: training seeds (each condition is trained on every seed; default: the run's
            own, as its attribution ranked its own documents; for a second training seed,
            attribute that seed's run and verify its report).
        methods: the report's methods whose top documents are removed (default: all of them
            but `random`).
        random_seed: the random condition's draw.
        baseline: `retrain` (the `none` member is trained like the others) or `run` (the
            attributed run itself stands for the `none` member of its own seed: the same
            recipe, seed and corpus, so one training fewer; bit-identical to a retraining
            only on the same kind of machine and thread count).
        controls: the conditions trained beside the methods': `random` (as many random
            documents) and `mentions` (every document stating a fact); leave one out only
            when it was measured elsewhere (its verdict is then missing).
    """

    k: int = 10
    seeds: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    random_seed: int = 0
    baseline: str = "retrain"
    controls: tuple[str, ...] = ("random", "mentions")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"--k {self.k}; pass 1 or more documents per fact")
        check_seeds(self.seeds)
        bad = [c for c in self.controls if c not in (RANDOM, MENTIONS)]
        if bad or len(set(self.controls)) != len(self.controls):
            raise ValueError(f"--controls {','.join(self.controls)}; pass distinct names of "
                             f"{RANDOM}, {MENTIONS}")
        if self.baseline not in BASELINES:
            raise ValueError(f"--baseline {self.baseline!r}; pass one of "
                             f"{', '.join(BASELINES)}")


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An attribution report (`workbench.attribute/1`), checked.

    Raises:
        FileNotFoundError / ValueError: missing, not JSON, or not an attribution report.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--report {p} does not exist; make it with `workbench "
                                "attribute --model RUN --top K`")
    try:
        report = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"--report {p} is not JSON; pass the report `workbench attribute` "
                         "wrote") from None
    if not isinstance(report, dict) or report.get("schema") != "workbench.attribute/1":
        raise ValueError(f"--report {p} is not an attribution report (schema "
                         "workbench.attribute/1)")
    for key in ("model", "corpus"):  # paths as the command was given them
        if not Path(str(report.get(key))).exists():
            raise FileNotFoundError(f"the report's {key} {report.get(key)!r} is not found from "
                                    f"{Path.cwd()}; run this where `workbench attribute` ran")
    return report


def _facts(report: dict[str, Any]) -> list[str]:
    facts = [q["fact"] for q in report["queries"]]
    if any(q.get("mentions", -1) < 0 for q in report["queries"]):
        raise ValueError("the report asks about a free --prompt; verify needs facts of the "
                         "world (run `workbench attribute --facts N`)")
    return facts


def drop_rules(report: dict[str, Any], cfg: VerifyConfig, n_train_docs: int
               ) -> dict[str, dict[str, Any]]:
    """The `[drop.NAME]` tables of the check: each method's top-k union, random, mentions.

    Raises:
        ValueError: a method not in the report, or a report listing fewer than k documents.
    """
    facts = _facts(report)
    methods = cfg.methods or tuple(m for m in report["methods"] if m != RANDOM)
    rules: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method not in report["methods"]:
            raise ValueError(f"--methods {method!r} is not in the report (it has "
                             f"{', '.join(report['methods'])})")
        top = report["methods"][method]["top"]
        short = min(len(top[f]) for f in facts)
        if short < cfg.k:
            raise ValueError(f"the report lists {short} documents per fact, fewer than --k "
                             f"{cfg.k}; run `workbench attribute ... --top {cfg.k}` again")
        docs = sorted({int(d["doc"]) for f in facts for d in top[f][: cfg.k]})
        rules[method] = {"docs": docs}
    n = max(len(r["docs"]) for r in rules.values()) if rules else cfg.k * len(facts)
    if RANDOM in cfg.controls:
        drawn = random.Random(cfg.random_seed).sample(range(n_train_docs),
                                                      min(n, n_train_docs))
        rules[RANDOM] = {"docs": sorted(drawn)}
    if MENTIONS in cfg.controls:
        rules[MENTIONS] = {"facts": facts}
    return rules


def recipe_tables(run: str | os.PathLike[str], corpus: str | os.PathLike[str],
                  seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
    """A sweep spec's tables that retrain `run` with its own recipe (model, training settings,
    and `seeds`, default its own seed) on a world like `corpus` (the plan links the corpus
    itself in: `plan_verify`).

    Raises:
        ValueError: `run` is not a run of ours.
    """
    from workbench.models.refs import ModelRef

    ref = ModelRef.of(str(run))
    if not ref.is_ours:
        raise ValueError(f"model {str(run)!r} is not a run of ours; retraining needs a run "
                         "made by `workbench train`")
    model, train = dict(ref.config["model"]), dict(ref.config["train"])
    manifest = json.loads((Path(corpus) / "corpus.json").read_text())
    return {
        "preset": "default",
        "axes": {"size": [f"{model['n_layers']}x{model['d_model']}x{model['n_heads']}"],
                 "steps": [train["steps"]],
                 "seed": list(seeds) if seeds else [train["seed"]]},
        "model": {"n_ctx": model["n_ctx"], "mlp_ratio": model["d_mlp"] / model["d_model"],
                  "act_fn": model["act_fn"], "attn_only": model["attn_only"]},
        "train": {k: v for k, v in train.items() if k not in ("steps", "seed")},
        "world": {**manifest["world_config"],
                  "tokens": int(manifest["splits"]["train"]["n_tokens"])}}


def check_recipe(spec: SweepSpec, run: str | os.PathLike[str]) -> None:
    """Every member's model is the run's (but its seed).

    Raises:
        ValueError: the run's model cannot be written as a sweep member.
    """
    from workbench.models.refs import ModelRef

    model = dict(ModelRef.of(str(run)).config["model"])
    for member in spec.members():
        got = asdict(member.model)
        want = {k: v for k, v in model.items() if k in got and k not in ("seed", "d_vocab")}
        if {k: got[k] for k in want} != want:
            raise ValueError(f"the run's model {want} cannot be written as a sweep member "
                             f"({ {k: got[k] for k in want} }); retraining needs a run whose "
                             "d_head is d_model / n_heads")


def verify_spec(report: dict[str, Any], cfg: VerifyConfig) -> SweepSpec:
    """The sweep of the check: the run's recipe, one member per condition and seed.

    Raises:
        ValueError: the report's model is not a run of ours, or its recipe cannot be
            written as a sweep member.
    """
    from sweep.spec import SweepSpec
    from workbench.world import load_corpus

    corpus = load_corpus(report["corpus"])
    tables = recipe_tables(report["model"], report["corpus"], cfg.seeds)
    rules = drop_rules(report, cfg, len(corpus.docs("train")))
    spec = SweepSpec.from_dict({
        **tables, "name": "verify",
        "description": f"attribution checked by retraining {report['model']} without the "
                       f"documents each method blames for {len(report['queries'])} facts",
        "axes": {**tables["axes"], "drop": [NONE, *rules]}, "drop": rules})
    check_recipe(spec, report["model"])
    return spec


def plan_verify(report_path: str | os.PathLike[str], out: str | os.PathLike[str],
                cfg: VerifyConfig = VerifyConfig(), *, overwrite: bool = False) -> Plan:
    """Plan the check under `out` (a sweep plan) and put the report's corpus in it as the
    plan's world (hard links where the file system allows), so the members train on the very
    documents the report ranked."""
    from sweep.plan import load_plan, plan_sweep

    report = read_report(report_path)
    outcome = plan_sweep(verify_spec(report, cfg), out, overwrite=overwrite)
    plan = load_plan(outcome.plan.root)
    world = plan.world_dir("world")
    if not (world / "corpus.json").is_file():
        _link_tree(Path(report["corpus"]), world)
    write_json_atomic(plan.root / "verify_plan.json", {
        "schema": "workbench.attribute_verify_plan/1", "report": str(Path(report_path)),
        "config": asdict(cfg)})
    return plan


def adopt_run(plan: Plan, run: str | os.PathLike[str]) -> list[str]:
    """`--baseline run`: the attributed run's files (its checkpoints, `run.json`, metrics and
    figure; not its analyses or attribution cache) hard-linked in as the `none` member of
    its own training seed, when that member is not started. Returns the adopted members.

    Raises:
        ValueError: the run is not trained to the member's last step, or its recipe is not
            the member's (then nothing is left behind).
    """
    from sweep.plan import check_member_dir, member_state
    from workbench.layout import CHECKPOINTS_DIR, read_run_json

    src = Path(run)
    seed = int(read_run_json(src)["train"]["seed"])
    adopted = []
    for member in plan.members():
        if member.drop != NONE or member.seed != seed or member_state(plan, member) != "new":
            continue
        dst = plan.run_dir(member)
        if dst.exists() and any(dst.iterdir()):
            continue
        if dst.exists():
            dst.rmdir()
        _link_tree(src, dst, ignore=lambda folder, entries: [  # the run's own files only
            e for e in entries if Path(folder) == src and e != CHECKPOINTS_DIR
            and not (src / e).is_file()])
        try:
            check_member_dir(plan, member)
            if member_state(plan, member) != "done":
                raise ValueError(f"--baseline run: {src} is not trained to step "
                                 f"{member.steps}, the member's last; train it to the end or "
                                 "pass --baseline retrain")
        except ValueError:
            shutil.rmtree(dst)
            raise
        adopted.append(member.name)
    return adopted


def _link_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    """A hard link of `a` at `b`, else a copy."""
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def _link_tree(src: Path, dst: Path, ignore: Callable[[str, list[str]], list[str]] | None = None
               ) -> None:
    """`src`'s files under `dst` (hard links, else copies), through a temporary folder;
    `ignore` as `shutil.copytree`'s."""
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=_link_file, ignore=ignore)
    os.replace(tmp, dst)


def fact_margins(model: Model, corpus: Corpus, facts: list[str]) -> dict[str, dict[str, float]]:
    """Per fact: the mean margin over its held-out prompts (true object's log-probability
    minus the best other object's of the relation), accuracy and chance."""
    from attribution.documents import Fact, queries, relation_objects
    from workbench.prompts import candidate_logprobs_many

    qs = queries(corpus, [Fact.parse(f) for f in facts])
    objects = relation_objects(corpus)
    groups = [(list(q.prompts), objects[q.fact.relation]) for q in qs if q.fact is not None]
    out = {}
    for q, logp in zip(qs, candidate_logprobs_many(model, groups)):
        assert q.fact is not None
        cands = objects[q.fact.relation]
        true = cands.index(q.answer)
        others = logp.clone()
        others[:, true] = -float("inf")
        margin = (logp[:, true] - others.max(-1).values).mean().item()
        accuracy = (logp.argmax(-1) == true).float().mean().item()
        out[str(q.fact)] = {"margin": margin, "accuracy": accuracy, "chance": 1 / len(cands)}
    return out


def measure(plan: Plan, report: dict[str, Any], cfg: VerifyConfig, *,
            report_path: str | None = None, progress: bool = False) -> dict[str, Any]:
    """The check's report from the plan's trained members (`workbench.attribute_verify/1`).

    Raises:
        ValueError: a member is not trained to its last step.
    """
    from tqdm.auto import tqdm

    from sweep.run import finished
    from workbench.models.loader import load
    from workbench.world import load_corpus

    facts = _facts(report)
    corpus = load_corpus(report["corpus"])
    members = plan.members()
    missing = [m.name for m in members if not finished(plan, m)]
    if missing:
        raise ValueError(f"{len(missing)} member(s) of {plan.root} are not trained ({missing[0]}"
                         f", ...); run `workbench attribute verify` again (or `workbench sweep "
                         f"run {plan.root}`)")
    truth = corpus.doc_facts("train")
    stating = truth.mentioning([_row(corpus, f) for f in facts])
    conditions: dict[str, Any] = {}
    for name, rule in plan.spec.drop_rules.items():
        removed = (np.asarray(rule.docs, dtype=np.int64) if rule.kind == "docs"
                   else np.flatnonzero(stating))
        conditions[name] = {"removed_docs": int(len(removed)),
                            "removed_stating": int(stating[removed].sum())}
    by_seed: dict[str, dict[str, Any]] = {}
    for m in tqdm(members, desc="members", disable=not progress, leave=False):
        model = load(str(plan.run_dir(m)), device="cpu")
        margins = fact_margins(model, corpus, facts)
        row = by_seed.setdefault(str(m.seed), {})[m.drop] = {
            "facts": margins,
            "margin": float(np.mean([v["margin"] for v in margins.values()])),
            "accuracy": float(np.mean([v["accuracy"] for v in margins.values()])),
            "chance": float(np.mean([v["chance"] for v in margins.values()]))}
        if m.drop == MENTIONS:  # what a stranger of the same name gets from this model
            from attribution.nameprior import name_prior

            row["name_prior"] = name_prior(model, corpus, facts)
    return {"schema": SCHEMA, "report": report_path, "model": report["model"],
            "corpus": report["corpus"], "config": asdict(cfg), "facts": facts,
            "conditions": conditions, "seeds": by_seed, "verdicts": verdicts(by_seed)}


def _row(corpus: Corpus, fact: str) -> int:
    from attribution.documents import Fact, queries

    return queries(corpus, [Fact.parse(fact)])[0].row


def verdicts(by_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per seed: each condition's mean margin drop from `none`; for each method, whether it
    drops more than BM25 and its ratio to random's drop; whether removing every mention
    leaves accuracy at chance (within 1.5x of it), and, when the mentions member's name prior
was measured, within 1.5x of the larger of chance and that prior.

    >>> v = verdicts({"0": {"none": {"margin": 5.0, "accuracy": 1.0, "chance": 0.1},
    ...                     "ekfac": {"margin": 2.0, "accuracy": 0.5, "chance": 0.1},
    ...                     "bm25": {"margin": 3.0, "accuracy": 0.8, "chance": 0.1},
    ...                     "random": {"margin": 4.5, "accuracy": 1.0, "chance": 0.1},
    ...                     "mentions": {"margin": -1.0, "accuracy": 0.1, "chance": 0.1}}})
    >>> v["0"]["drop"]["ekfac"], v["0"]["ekfac"]["vs_random"], v["0"]["mentions_at_chance"]
    (3.0, 6.0, True)
    """
    out: dict[str, Any] = {}
    for seed, conds in by_seed.items():
        if NONE not in conds:
            continue
        base = conds[NONE]["margin"]
        drop = {c: base - v["margin"] for c, v in conds.items() if c != NONE}
        row: dict[str, Any] = {"drop": drop}
        rand = drop.get(RANDOM)
        for c, d in drop.items():
            if c in (RANDOM, MENTIONS, "bm25"):
                continue
            row[c] = {"beats_bm25": None if "bm25" not in drop else bool(d > drop["bm25"]),
                      "vs_random": None if not rand or rand <= 0 else d / rand,
                      "at_least_3x_random": None if rand is None else bool(d >= 3 * max(rand,
                                                                                        0.0))}
        if MENTIONS in conds:
            m = conds[MENTIONS]
            row["mentions_at_chance"] = bool(m["accuracy"] <= 1.5 * m["chance"])
            if m.get("name_prior"):
                prior = prior_accuracy(m["name_prior"])
                row["mentions_name_prior"] = prior
                row["mentions_at_name_prior"] = bool(
                    m["accuracy"] <= 1.5 * max(m["chance"], prior))
        out[seed] = row
    return out


def prior_accuracy(prior: dict[str, dict[str, dict[str, float]]]) -> float:
    """The mean over facts of the better of the first-name and surname priors' accuracy
    (`attribution.nameprior`).

    >>> prior_accuracy({"a:city": {"first": {"accuracy": 0.6}, "last": {"accuracy": 0.1}},
    ...                 "b:city": {"first": {"accuracy": 0.0}, "last": {"accuracy": 0.2}}})
    0.4
    """
    best = [max([g["accuracy"] for k, g in groups.items() if k in ("first", "last")],
                default=0.0) for groups in prior.values()]
    return float(np.mean(best)) if best else 0.0


def summary(result: dict[str, Any]) -> str:
    """What `workbench attribute verify` prints: per seed and condition the documents removed,
    the mean margin and accuracy, the drop from `none`, and the verdicts."""
    lines = []
    conds = result["conditions"]
    for seed, by in result["seeds"].items():
        v = result["verdicts"].get(seed, {})
        lines.append(f"training seed {seed}: {'condition':10s} {'removed':>8s} {'stating':>8s} "
                     f"{'margin':>7s} {'drop':>7s} {'accuracy':>8s}")
        for c, r in by.items():
            removed = conds.get(c, {"removed_docs": 0, "removed_stating": 0})
            drop = v.get("drop", {}).get(c)
            lines.append(f"{'':16s}{c:10s} {removed['removed_docs']:8d} "
                         f"{removed['removed_stating']:8d} {r['margin']:7.2f} "
                         f"{'-' if drop is None else f'{drop:+.2f}':>7s} {r['accuracy']:8.2f}")
        for c, row in v.items():
            if isinstance(row, dict) and "vs_random" in row:
                ratio = row["vs_random"]
                lines.append(f"  {c}: drop beats BM25's: {row['beats_bm25']}; "
                             f"{'-' if ratio is None else f'{ratio:.1f}x'} random's")
        if "mentions_at_chance" in v:
            prior = ("" if "mentions_name_prior" not in v else
                     f"; at the name prior ({v['mentions_name_prior']:.2f}: strangers sharing "
                     f"the subject's first name or surname): {v['mentions_at_name_prior']}")
            lines.append(f"  every mention removed: accuracy at chance: "
                         f"{v['mentions_at_chance']}{prior}")
    return "\n".join(lines)


def digest(result: dict[str, Any], path: str) -> dict[str, Any]:
    """What the attribution report keeps of its check (under `verify`): where the full
    result is, k, the documents removed, and per seed each condition's margin, accuracy and
    drop, with the verdicts."""
    return {"result": path, "k": result["config"]["k"], "conditions": result["conditions"],
            "seeds": {seed: {c: {"margin": r["margin"], "accuracy": r["accuracy"],
                                 "drop": result["verdicts"].get(seed, {}).get("drop", {}).get(c)}
                             for c, r in by.items()} for seed, by in result["seeds"].items()},
            "verdicts": result["verdicts"]}
