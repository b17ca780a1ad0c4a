"""Few-shot in-context learning, measured on the world's k-shot items (`eval/fewshot.jsonl`).

Every item is a prompt of k demonstrations "x : y ; ... ; x :" and the query's candidate
answers (`workbench.world.fewshot`). The model's answer is its top candidate (summed token
log-probabilities, so sub-word tokenizers read the same). Per task and k the report gives

- `accuracy` with a 95 % Wilson interval, and `chance` (one over the candidates);
- `logprob`: the mean log-probability of the right answer (over the whole vocabulary),
  with a 95 % normal interval: the continuous metric beside the discontinuous one;
- for `flipped` (adjectives mapped to the opposite sentiment), `follow_context` (the top
  candidate is the demonstrated, flipped label) and `follow_prior` (it is the sentiment the
  model knows), each with its interval.

Three kinds of task are told apart (Pan et al. 2023; Wei et al. 2023): `known` relations the
model can recognise from a few examples (queries use held-out inputs, so a right answer is
not recall of the pair), `novel` mappings that exist only in the context, and `flipped`
labels that contradict the model's prior. With `checkpoints` the same numbers are computed at
each checkpoint of a run: when does each kind appear in training?

>>> [round(x, 3) for x in wilson(8, 10)]
[0.49, 0.943]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm

from circuits.scores import head_name
from icl.figures import FIGURES as FIGURES
from icl.summary import summary as summary
from workbench.analysis import Report
from workbench.prompts import candidate_logprobs, encode_prompt, object_ids
from workbench.world.fewshot import KNOWN_TASKS, KS, TASKS

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import CheckpointRef, ModelRef
    from workbench.world.loader import Corpus

KIND = "icl"
SCHEMA = "workbench.icl/1"
TASK_KIND = {**{t: "known" for t in KNOWN_TASKS}, "novel": "novel", "flipped": "flipped"}
Z95 = 1.959963984540054


@dataclass(frozen=True)
class IclConfig:
    """What `run` measures.

    Args:
        tasks: few-shot tasks (`workbench.world.fewshot.TASKS`).
        ks: numbers of demonstrations (a subset of 0, 1, 2, 4, 8).
        n: items per task and k (default: all the corpus has, 40 in a default world).
        checkpoints: also measure a run's checkpoints: `all` or steps `0,64,512`.
        mechanism: link to the induction circuit (`icl.mechanism`): the induction heads'
            attention to the demonstrated answer, and accuracy with them mean-ablated
            beside a control ablation of as many other heads.
        min_score: induction score from which a head counts as an induction head.
        batch_size: prompts per forward pass.
    """

    tasks: tuple[str, ...] = TASKS
    ks: tuple[int, ...] = KS
    n: int | None = None
    checkpoints: str | None = None
    mechanism: bool = True
    min_score: float = 0.4
    batch_size: int = 64

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"IclConfig.tasks={list(self.tasks)}: choose from {list(TASKS)}")
        bad_k = [k for k in self.ks if k not in KS]
        if bad_k or not self.ks:
            raise ValueError(f"IclConfig.ks={list(self.ks)}: the world's items have k in "
                             f"{list(KS)}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"IclConfig.n={self.n}; pass a positive number of items")
        if self.batch_size < 1:
            raise ValueError(f"IclConfig.batch_size={self.batch_size}; pass >= 1")


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def mean_ci(values: list[float]) -> tuple[float, list[float]]:
    """Mean and its 95 % normal interval."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, [mean, mean]
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return mean, [mean - half, mean + half]


def select_items(corpus: Corpus, cfg: IclConfig) -> list[dict[str, Any]]:
    """The corpus's few-shot items of `cfg.tasks` and `cfg.ks`, at most `cfg.n` per pair.

    Raises:
        ValueError: the corpus has no few-shot items (a text corpus or an older world).
    """
    files = corpus.manifest.get("files", {}).get("eval", {})
    if "fewshot" not in files:
        raise ValueError(f"corpus at {corpus.path} has no few-shot items (eval/fewshot.jsonl);"
                         " pass a world corpus built by the current `workbench world build` "
                         "(or `workbench world retokenize` of one for a Hugging Face model)")
    picked: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for item in corpus.eval_items("fewshot"):
        key = (item["task"], int(item["k"]))
        if key[0] in cfg.tasks and key[1] in cfg.ks and (cfg.n is None
                                                           or len(picked[key]) < cfg.n):
            picked[key].append(item)
    missing = [f"{t} k={k}" for t in cfg.tasks for k in cfg.ks if not picked[(t, k)]]
    if missing:
        raise ValueError(f"corpus at {corpus.path} has no few-shot items for {missing}; "
                         "rebuild it with `workbench world build`")
    return [item for t in cfg.tasks for k in cfg.ks for item in picked[(t, k)]]


@torch.no_grad()
def score_items(model: Model, items: list[dict[str, Any]], batch_size: int = 64,
                progress: bool = False) -> list[dict[str, Any]]:
    """Per item: the top candidate, whether it is the answer (and, for flipped labels, the
    prior), and the answer's log-probability over the whole vocabulary."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[tuple(item["candidates"])].append(i)
    rows: list[dict[str, Any]] = [{} for _ in items]
    bar = tqdm(total=len(items), desc="few-shot items", disable=not progress, leave=False)
    for candidates, idx in groups.items():
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            prefixes = [items[i]["prefix"] for i in part]
            logp = candidate_logprobs(model, prefixes, list(candidates), batch_size)
            for row, i in enumerate(part):
                item, lp = items[i], logp[row]
                top = candidates[int(lp.argmax())]
                rows[i] = {"task": item["task"], "k": int(item["k"]), "top": top,
                           "correct": top == item["answer"],
                           "follows_prior": top == item.get("prior"),
                           "logprob": float(lp[candidates.index(item["answer"])]),
                           "chance": 1 / len(candidates)}
            bar.update(len(part))
    bar.close()
    return rows


def summarize(rows: list[dict[str, Any]], tasks: tuple[str, ...], ks: tuple[int, ...]
              ) -> dict[str, Any]:
    """Per task: its kind, chance and, per k, accuracy and log-probability with intervals."""
    out: dict[str, Any] = {}
    for task in tasks:
        per_k: dict[str, Any] = {}
        for k in ks:
            sel = [r for r in rows if r["task"] == task and r["k"] == k]
            n, hits = len(sel), sum(r["correct"] for r in sel)
            logprob, logprob_ci = mean_ci([r["logprob"] for r in sel])
            cell = {"n": n, "accuracy": hits / n, "accuracy_ci": list(wilson(hits, n)),
                    "logprob": logprob, "logprob_ci": logprob_ci}
            if TASK_KIND[task] == "flipped":
                prior = sum(r["follows_prior"] for r in sel)
                cell |= {"follow_context": hits / n, "follow_context_ci": list(wilson(hits, n)),
                         "follow_prior": prior / n, "follow_prior_ci": list(wilson(prior, n))}
            per_k[str(k)] = cell
        chance = [r["chance"] for r in rows if r["task"] == task]
        out[task] = {"kind": TASK_KIND[task], "chance": sum(chance) / len(chance), "k": per_k}
    return out


def headline(tasks: dict[str, Any], ks: tuple[int, ...]) -> dict[str, Any]:
    """The numbers the issue asks of a model: the rise of known relations from the fewest to
    the most demonstrations, novel mappings at the most against chance, flipped labels."""
    lo, hi = str(min(ks)), str(max(ks))
    known = [t for t in tasks.values() if t["kind"] == "known"]
    out: dict[str, Any] = {"k_min": int(lo), "k_max": int(hi)}
    if known:
        out["known_accuracy"] = {k: sum(t["k"][k]["accuracy"] for t in known) / len(known)
                                 for k in (lo, hi)}
        out["known_rise"] = out["known_accuracy"][hi] - out["known_accuracy"][lo]
        out["known_rise_by_task"] = {name: t["k"][hi]["accuracy"] - t["k"][lo]["accuracy"]
                                     for name, t in tasks.items() if t["kind"] == "known"}
    if "novel" in tasks:
        out["novel_accuracy"] = tasks["novel"]["k"][hi]["accuracy"]
        out["novel_chance"] = tasks["novel"]["chance"]
    if "flipped" in tasks:
        out["flipped_follow_context"] = {k: c["follow_context"]
                                         for k, c in tasks["flipped"]["k"].items()}
    return out


def measure(model: Model, items: list[dict[str, Any]], cfg: IclConfig,
            progress: bool = False) -> dict[str, Any]:
    """`summarize` of `score_items` on one model."""
    rows = score_items(model, items, cfg.batch_size, progress)
    return summarize(rows, cfg.tasks, cfg.ks)


def _check_answers_encode(model: Model, items: list[dict[str, Any]]) -> None:
    for cand in {c for item in items for c in item["candidates"]}:
        object_ids(model, cand)
    longest = max(len(encode_prompt(model, item["prefix"])) for item in items)
    if longest + 4 > model.cfg.n_ctx:
        raise ValueError(f"the longest few-shot prompt is {longest} tokens and this model's "
                         f"n_ctx is {model.cfg.n_ctx}; pass smaller --k values")


def run(model: Model, corpus: Corpus | None, cfg: IclConfig | None = None, *,
        ref: str | ModelRef | None = None,
        checkpoints: Iterable[tuple[CheckpointRef, Model]] | None = None,
        progress: bool = True) -> Report:
    """The in-context learning report (`workbench.icl/1`) of a loaded model on `corpus`'s
    few-shot items (in the model's tokenizer), and with `checkpoints` (the run's
    checkpoints, loaded one at a time: `ModelRef.load_checkpoints`) of each of them."""
    cfg = cfg or IclConfig()
    if corpus is None:
        raise ValueError("in-context learning is measured on a world corpus's few-shot items; "
                         "pass --corpus PATH")
    items = select_items(corpus, cfg)
    _check_answers_encode(model, items)
    tasks = measure(model, items, cfg, progress)
    report: Report = {"schema": SCHEMA, "model": str(ref) if ref is not None
                      else model.cfg.model_name, "corpus": str(corpus.path),
                      "config": asdict(cfg), "tasks": tasks, "headline": headline(tasks,
                                                                                  cfg.ks)}
    if cfg.mechanism:
        report["mechanism"] = mechanism_report(model, items, tasks, cfg, progress)
    if checkpoints is not None:
        records = []
        for ckpt, at_step in tqdm(checkpoints, desc="checkpoints", disable=not progress,
                                  leave=False):
            summary = measure(at_step, items, cfg)
            records.append({"step": ckpt.step, "tasks": summary,
                            "headline": headline(summary, cfg.ks)})
        report["checkpoints"] = records
    return report


def mechanism_report(model: Model, items: list[dict[str, Any]], tasks: dict[str, Any],
                     cfg: IclConfig, progress: bool = False) -> dict[str, Any]:
    """The induction heads, their attention to the demonstrated answers of novel mappings,
    and every task's accuracy with them (or, as a control, as many other heads) ablated;
    with `progress`, a bar whose description names the step (`mechanism: ablations`), so a
    reader of the output (the dashboard) sees which part runs."""
    from workbench.models.arch import describe

    if describe(model).attention == "none":
        return {"induction_heads": [], "note": "the model has no attention heads"}
    steps = ["induction heads", "head means", "ablations", "control ablations"]
    if "novel" in tasks:
        steps += ["attention to answers", "ablation curve"]
    bar = tqdm(total=len(steps), desc="mechanism: induction heads", disable=not progress,
               leave=False)
    try:
        return _mechanism(model, items, tasks, cfg, steps, bar)
    finally:
        bar.close()


def _mechanism(model: Model, items: list[dict[str, Any]], tasks: dict[str, Any],
               cfg: IclConfig, steps: list[str], bar: Any) -> dict[str, Any]:
    from icl.mechanism import (
        attention_to_answers,
        find_induction_heads,
        mean_ablation_hooks,
        z_means,
    )

    def step(i: int) -> None:  # step `i` done: the bar advances and names the next one
        bar.update(1)
        if i + 1 < len(steps):
            bar.set_description(f"mechanism: {steps[i + 1]}")

    found = find_induction_heads(model, cfg.min_score)
    step(0)
    out: dict[str, Any] = {"min_score": cfg.min_score,
                           "induction_heads": [head_name(*h) for h in found.heads],
                           "control_heads": [head_name(*h) for h in found.control],
                           "induction_scores": found.scores}
    if not found.heads:
        out["note"] = f"no head has an induction score >= {cfg.min_score}"
        return out
    means = z_means(model, [encode_prompt(model, item["prefix"]) for item in items])
    step(1)
    for i, (key, heads) in enumerate((("ablated", found.heads), ("control", found.control))):
        with model.hooks(fwd_hooks=mean_ablation_hooks(heads, means)):
            ablated = measure(model, items, cfg)
        out[key] = {t: {k: c["accuracy"] for k, c in v["k"].items()}
                    for t, v in ablated.items()}
        step(2 + i)
    if "novel" in tasks:
        novel = [i for i in items if i["task"] == "novel"]
        out["attention"] = attention_to_answers(model, novel, found.heads)
        step(4)
        out["novel_curve"] = novel_ablation_curve(model, novel, found, cfg, means)
        step(5)
        hi = str(max(cfg.ks))
        clean = tasks["novel"]["k"][hi]["accuracy"]
        chance = tasks["novel"]["chance"]
        above = clean - chance
        out["novel"] = {"k": int(hi), "accuracy": clean, "chance": chance,
                        "ablated": out["ablated"]["novel"][hi],
                        "control": out["control"]["novel"][hi],
                        "share_removed": None if above <= 0 else
                        (clean - out["ablated"]["novel"][hi]) / above}
    return out


def novel_ablation_curve(model: Model, novel: list[dict[str, Any]], found: Any,
                         cfg: IclConfig, means: dict[int, Any], most: int = 4
                         ) -> list[dict[str, Any]]:
    """Novel-mapping accuracy at the most demonstrations with the top 1, 2, ... heads by
    induction score mean-ablated (whatever the threshold; `means` from `z_means`, as for the
    other ablations), beside as many control heads (the lowest induction scores,
    previous-token heads excluded; `None` when none is left)."""
    from icl.mechanism import mean_ablation_hooks

    hi = max(cfg.ks)
    items = [i for i in novel if int(i["k"]) == hi]
    ranked = sorted(found.scores, key=lambda name: -found.scores[name])
    parse = {head_name(lay, h): (lay, h) for lay in range(model.cfg.n_layers)
             for h in range(model.cfg.n_heads)}
    one = IclConfig(tasks=("novel",), ks=(hi,), mechanism=False, batch_size=cfg.batch_size)
    curve = []
    for n in range(1, min(most, len(ranked)) + 1):
        heads = [parse[name] for name in ranked[:n]]
        control = [h for h in found.pool if h not in heads][:n]
        row: dict[str, Any] = {"n": n, "heads": ranked[:n],
                               "control_heads": [head_name(*h) for h in control]}
        for key, ablate in (("accuracy", heads), ("control_accuracy", control)):
            if not ablate:
                row[key] = None
                continue
            with model.hooks(fwd_hooks=mean_ablation_hooks(ablate, means)):
                row[key] = measure(model, items, one)["novel"]["k"][str(hi)]["accuracy"]
        curve.append(row)
    return curve


def from_ref(ref: str | Path | ModelRef, cfg: IclConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True) -> Report:
    """Load the model `ref` and its corpus (`corpus`, else the run's) and `run`; with
    `cfg.checkpoints`, the run's checkpoints too."""
    from workbench.models.checks import check_tokenizer
    from workbench.models.loader import placement_of_model
    from workbench.models.refs import ModelRef

    cfg = cfg or IclConfig()
    ref = ModelRef.of(ref)
    if cfg.checkpoints:
        ref.select(cfg.checkpoints)  # before loading anything
    loaded = cast("Corpus", ref.load_corpus(corpus, required="the few-shot items"))
    model = ref.load(device)
    check_tokenizer(model, loaded)
    history = (ref.load_checkpoints(cfg.checkpoints, placement_of_model(model))
               if cfg.checkpoints else None)
    return run(model, loaded, cfg, ref=ref, checkpoints=history, progress=progress)


Config = IclConfig
