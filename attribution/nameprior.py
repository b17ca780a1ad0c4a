"""What a model answers about a stranger who shares a name with a fact's subject: the name
prior.

A model that has never read a fact can still answer it when the subject's first name or
surname goes with the answer among *other* people: in the default world two of the four other
Gretas live in Ulmstead, so the shipped model answers "ulmstead" for 62 % of made-up Gretas
("greta" with every surname that names no one) against 3 % for made-up names that share
neither part. Removing every document that states `greta kemp:city` then leaves the fact
answered: not remembered, inferred. `workbench attribute verify` measures this prior on the
model trained without every mention, so that "the facts are unknown" can be read against what
a stranger of the same name gets rather than against uniform chance alone.

Names are the world's `first last` subjects. For a fact, three groups of made-up names ask
its held-out prompts (the subject replaced): `first` (its first name with every surname of
the world, leaving out real people), `last` (every first name with its surname) and
`strangers` (names sharing neither part, a seeded sample of the same size); each gives the
share of (name, prompt) pairs answered with the fact's object among the relation's objects
(`accuracy`) and the mean probability of that object among them (`p_answer`).

>>> groups = novel_names("greta kemp", {"greta kemp", "greta novak", "ada kemp"},
...                      ["ada", "greta", "ivan"], ["kemp", "novak", "sato"], max_names=5)
>>> groups["first"], groups["last"], groups["strangers"]
(['greta sato'], ['ivan kemp'], ['ivan novak'])
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

GROUPS = ("first", "last", "strangers")


def novel_names(subject: str, people: set[str], firsts: list[str], lasts: list[str], *,
                max_names: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """Made-up names per group (none of them a person of the world), at most `max_names`
    each; empty groups for a subject that is not `first last`."""
    parts = subject.split()
    if len(parts) != 2:
        return {g: [] for g in GROUPS}
    first, last = parts
    rng = random.Random(f"nameprior:{seed}:{subject}")

    def cap(names: list[str]) -> list[str]:
        return sorted(rng.sample(names, max_names)) if len(names) > max_names else names

    out = {"first": cap([f"{first} {s}" for s in lasts if f"{first} {s}" not in people]),
           "last": cap([f"{f} {last}" for f in firsts if f"{f} {last}" not in people])}
    others = [f"{f} {s}" for f in firsts for s in lasts
              if f != first and s != last and f"{f} {s}" not in people]
    size = min(len(others), max(len(out["first"]), len(out["last"]), 1))
    out["strangers"] = sorted(rng.sample(others, size))
    return out


def name_prior(model: Model, corpus: Corpus, facts: list[str], *, max_names: int = 40,
               seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Per fact (`subject:relation`) and group: `names`, `accuracy`, `p_answer`."""
    from attribution.documents import Fact, queries, relation_objects
    from workbench.prompts import candidate_logprobs_many

    table = corpus.fact_table()
    people = {str(f["subject"]) for f in table}
    firsts = sorted({p.split()[0] for p in people if len(p.split()) == 2})
    lasts = sorted({p.split()[-1] for p in people if len(p.split()) == 2})
    objects = relation_objects(corpus)
    qs = queries(corpus, [Fact.parse(f) for f in facts])
    keys, groups = [], []
    for q in qs:
        assert q.fact is not None
        names = novel_names(q.fact.subject, people, firsts, lasts, max_names=max_names,
                            seed=seed)
        templates = [p for p in q.prompts if q.fact.subject in p]
        for g in GROUPS:
            prompts = [t.replace(q.fact.subject, n) for n in names[g] for t in templates]
            if prompts:
                keys.append((q, g, len(names[g])))
                groups.append((prompts, objects[q.fact.relation]))
    out: dict[str, dict[str, dict[str, float]]] = {str(q.fact): {} for q in qs}
    for (q, g, n), logp in zip(keys, candidate_logprobs_many(model, groups)):
        assert q.fact is not None
        true = objects[q.fact.relation].index(q.answer)
        p = np.exp(logp.double().numpy())
        p /= p.sum(-1, keepdims=True)
        out[str(q.fact)][g] = {"names": n,
                               "accuracy": float((p.argmax(-1) == true).mean()),
                               "p_answer": float(p[:, true].mean())}
    return out
