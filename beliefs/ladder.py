"""In-context pressure ladder: state a false fact in the context, with rising force, then ask.

Levels (each adds pressure to the one before) use the cues whose reliability the world plants
(`workbench.world.updates`; English equivalents for real facts):

0. `none`: the question alone;
1. `rumor`: "a rumor says that anna berg lives in solvik ." (in the world, rarely followed,
   never for well-known people);
2. `hearsay`: "i heard that ..." (usually followed, less so the better known the person);
3. `news`: "news : ..." (always followed);
4. `repeated`: the news three times, in three phrasings;
5. `fewshot`: three demonstrations on other subjects, each news followed by the question
   answered by it, then the news.

Every level (`none` too, so levels differ only in the pressure) then says `between` true
facts about other subjects of the same relation, as the world's update documents do between
a cue and the restatement, and asks.
A belief's flip level is the first level whose stated answer is the new object; one that
never flips counts as the level above the last (`len(LEVELS)`) when levels are correlated
with strength (`beliefs.strength`).

Per belief: p(new) and p(old) at every level, the stated answer (top-1 among candidates),
the first level at which it flips to the new object, and whether facts asked in the same
context (other subjects' same relation, the subject's other relations) stay put.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from beliefs.elicit import candidate_logprobs, join, object_ids
from beliefs.factbase import Belief, FactBase
from workbench.prompts import encode_prompt
from workbench.world.updates import CUES

if TYPE_CHECKING:
    from workbench.models import Model

LEVELS = ("none", "rumor", "hearsay", "news", "repeated", "fewshot")
WORLD_CUES = {"rumor": CUES["rumor"], "hearsay": CUES["hearsay"], "news": CUES["news"]}
ENGLISH_CUES = {"rumor": "There is a rumor that", "hearsay": "I heard that",
                "news": "Breaking news:"}


@dataclass(frozen=True)
class LadderConfig:
    """Sizes of the ladder test."""

    n_demos: int = 3  # few-shot demonstrations on other subjects
    n_controls: int = 2  # other subjects of the same relation asked in the same context
    # True facts about other subjects (same relation) said between the pressure and the
    # question, as in the world's update documents, which restate a changed fact at once in
    # 30 % of them and after 1-3 other facts otherwise. Asked at once (0), the seed-0
    # `default` of the world before immediate restatements flipped 2 % of 50 facts by news,
    # and 20 % with one fact between.
    between: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_demos", "n_controls", "between"):
            if getattr(self, name) < 0:
                raise ValueError(f"LadderConfig.{name}={getattr(self, name)}; pass >= 0")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def contexts(base: FactBase, belief: Belief, new: str, cfg: LadderConfig) -> dict[str, str]:
    """The context text of every level for making `belief` state `new`."""
    world = base.source == "world"
    cues = WORLD_CUES if world else ENGLISH_CUES

    def cued(cue: str, b: Belief, obj: str, template: int = 0) -> str:
        text = b.statement(obj, template)
        return f"{cues[cue]} {text if world else _lower_first(text)}"

    n = len(belief.prompts)
    demos = []
    for other in base.neighbours(belief, cfg.n_demos, seed=cfg.seed + 1):
        cf = base.new_object(other, cfg.seed)
        demos.append(f"{cued('news', other, cf)} {other.statement(cf, 1 % len(other.prompts))}")
    news = cued("news", belief, new)
    levels = {
        "none": "",
        "rumor": cued("rumor", belief, new),
        "hearsay": cued("hearsay", belief, new),
        "news": news,
        "repeated": " ".join(cued("news", belief, new, i % n) for i in range(3)),
        "fewshot": " ".join(demos + [news]),
    }
    gap = " ".join(b.statement() for b in _between(base, belief, cfg))
    return {lv: " ".join(t for t in (text, gap) if t) for lv, text in levels.items()}


def _between(base: FactBase, belief: Belief, cfg: LadderConfig) -> list[Belief]:
    """The true facts said between the pressure and the question (other subjects, the same
    relation: what the world's update documents put there)."""
    if not cfg.between:
        return []
    return base.neighbours(belief, cfg.n_demos + cfg.between, seed=cfg.seed + 3)[-cfg.between:]


def controls(base: FactBase, belief: Belief, cfg: LadderConfig) -> list[Belief]:
    """Facts asked in the same context that should not move (never the few-shot subjects)."""
    demo_subjects = {b.subject for b in base.neighbours(belief, cfg.n_demos, seed=cfg.seed + 1)
                     + _between(base, belief, cfg)}
    others = [b for b in base.neighbours(belief, cfg.n_demos + cfg.n_controls + 4,
                                         seed=cfg.seed + 2) if b.subject not in demo_subjects]
    return others[: cfg.n_controls] + base.other_relations(belief)


def ladder(model: Model, base: FactBase, belief: Belief, new: str | None = None,
           cfg: LadderConfig | None = None) -> dict[str, Any]:
    """Run every level for one belief; see the module docstring for what is measured."""
    cfg = cfg or LadderConfig()
    new = new or base.new_object(belief, cfg.seed)
    if new not in belief.candidates:
        raise ValueError(f"new object {new!r} is not a candidate of {belief.relation!r}; "
                         f"use one of {list(belief.candidates)[:6]}...")
    ctx = contexts(base, belief, new, cfg)
    # levels whose context does not fit the model's n_ctx are reported as skipped
    fits = [_fits(model, join(c, belief.prompts[0]), belief.candidates) for c in ctx.values()]
    levels = [lv for lv, ok in zip(LEVELS, fits, strict=True) if ok]
    logp = (candidate_logprobs(model, [join(ctx[lv], belief.prompts[0]) for lv in levels],
                               belief.candidates)
            if levels else torch.empty(0, len(belief.candidates)))  # none fits: all skipped
    i_new, i_old = belief.candidates.index(new), belief.candidates.index(belief.object)
    p = logp.exp()
    stated = {lv: belief.candidates[int(j)] for lv, j in zip(levels, logp.argmax(-1),
                                                              strict=True)}
    ctrl = controls(base, belief, cfg)
    kept: dict[str, float | None] = {}
    if ctrl:
        answers = []
        for c in ctrl:  # one call per control: candidates differ by relation
            ok = [lv for lv in levels if _fits(model, join(ctx[lv], c.prompts[0]), c.candidates)]
            if not ok:
                continue
            got = candidate_logprobs(model, [join(ctx[lv], c.prompts[0]) for lv in ok],
                                     c.candidates).argmax(-1)
            answers.append({lv: c.candidates[int(j)] for lv, j in zip(ok, got, strict=True)})
        for level in LEVELS:
            same = [a[level] == a["none"] for a in answers if level in a and "none" in a]
            kept[level] = float(np.mean(same)) if same else None
    flip = next((li for li, lv in enumerate(LEVELS) if stated.get(lv) == new), None)
    return {
        "subject": belief.subject,
        "relation": belief.relation,
        "object": belief.object,
        "new": new,
        "levels": {
            level: ({"p_new": float(p[levels.index(level), i_new]),
                     "p_old": float(p[levels.index(level), i_old]),
                     "stated": stated[level], "context": ctx[level]} if level in stated else
                    {"p_new": None, "p_old": None, "stated": None, "context": ctx[level],
                     "skipped": f"longer than the model's n_ctx={model.cfg.n_ctx}"})
            for level in LEVELS
        },
        "flip_level": None if flip is None else LEVELS[flip],
        "flip_index": flip,
        "others_kept": kept,
        "n_controls": len(ctrl),
    }


def _fits(model: Model, prompt: str, candidates: tuple[str, ...]) -> bool:
    longest = max(len(object_ids(model, c)) for c in candidates)
    return len(encode_prompt(model, prompt)) + longest - 1 <= model.cfg.n_ctx


def summarize_ladder(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Share flipped by each level, mean p(new) per level, others kept per level."""
    if not results:
        raise ValueError("no ladder results to summarize; pass at least one belief")
    out: dict[str, Any] = {"n": len(results), "levels": list(LEVELS)}
    flips = [r["flip_index"] for r in results]
    out["flip_level"] = {
        level: sum(f == li for f in flips) for li, level in enumerate(LEVELS)
    } | {"never": sum(f is None for f in flips)}
    out["flipped_by"] = {
        level: float(np.mean([f is not None and f <= li for f in flips]))
        for li, level in enumerate(LEVELS)
    }
    for key in ("p_new", "p_old"):
        out[key] = {}
        for level in LEVELS:
            vals = [r["levels"][level][key] for r in results
                    if r["levels"][level][key] is not None]
            out[key][level] = float(np.mean(vals)) if vals else None
    out["skipped"] = {level: sum("skipped" in r["levels"][level] for r in results)
                      for level in LEVELS}
    out["others_kept"] = {}
    for level in LEVELS:
        vals = [r["others_kept"][level] for r in results
                if r["others_kept"].get(level) is not None]
        out["others_kept"][level] = float(np.mean(vals)) if vals else None
    return out
